"""The page's score chart (issue 18 friction: it had no axes or values), drawn by the page's own
script under Node with a minimal DOM (tests/serving/api/js/chart_harness.js): the chart's logic, where
no browser is installed. Skipped without Node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batchrec_dagster.serving.api.page import PAGE

HARNESS = Path(__file__).with_name("js") / "chart_harness.js"


def draw(points: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    out = subprocess.run([node, str(HARNESS), json.dumps(points), str(PAGE)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    drawn = json.loads(out)
    return drawn["svg"]["children"], drawn["note"]


def texts(elements: list[dict[str, Any]], cls: str) -> list[str]:
    return [e["text"] for e in elements if e["tag"] == "text" and e["attrs"].get("class") == cls]


def test_the_score_chart_has_axes_ticks_and_values() -> None:
    points = [{"window_end": f"2026-12-03T{h:02d}:00:00+00:00", "score": s}
              for h, s in ((10, 0.21), (11, 0.25), (12, 0.23))]
    elements, note = draw(points)
    assert sum(1 for e in elements if e["tag"] == "line" and e["attrs"].get("class") == "axis") == 2
    assert texts(elements, "y-tick") == ["0.2100", "0.2300", "0.2500"]  # lowest, middle, highest
    assert texts(elements, "x-tick") == ["12-03 10:00", "12-03 11:00", "12-03 12:00"]
    assert texts(elements, "value") == ["0.2100", "0.2500", "0.2300"]  # every point's value
    titles = {e["text"] for e in elements if e["tag"] == "text"}
    assert {"NDCG@100", "evaluation window end (UTC)"} <= titles
    dots = [e for e in elements if e["tag"] == "circle"]
    assert [d["children"][0]["text"] for d in dots] == ["12-03 10:00: 0.2100", "12-03 11:00: 0.2500",
                                                       "12-03 12:00: 0.2300"]
    # higher scores are drawn higher (smaller y)
    ys = [float(d["attrs"]["cy"]) for d in dots]
    assert ys[1] < ys[2] < ys[0]
    assert note == "3 window(s), newest 0.2300"


def test_many_windows_label_the_ends_and_the_extremes_and_one_window_is_drawn() -> None:
    scores = [0.2 + 0.01 * (i % 5) for i in range(20)]
    points = [{"window_end": f"2026-12-0{1 + i // 10}T{i % 10:02d}:00:00+00:00", "score": s}
              for i, s in enumerate(scores)]
    elements, _ = draw(points)
    assert texts(elements, "x-tick") == ["12-01 00:00", "12-02 09:00"]
    assert sorted(texts(elements, "value")) == ["0.2000", "0.2400", "0.2400"]  # first, best, last
    assert sum(1 for e in elements if e["tag"] == "circle") == 20

    elements, note = draw([{"window_end": "2026-12-03T10:00:00+00:00", "score": 0.3}])
    assert texts(elements, "value") == ["0.3000"] and texts(elements, "y-tick") == ["0.3000"]
    assert note == "1 window(s), newest 0.3000"
