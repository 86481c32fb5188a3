"""Metadata helpers shared by the assets: markdown tables, the data window, counters, the learning
curve, and the rounding of every float the assets record (`rounded_result`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import dagster as dg

from batchrec_dagster.settings import PARTITION_TIMEZONE


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4f}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> dg.MetadataValue:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def window_metadata(start: datetime, end: datetime) -> dict[str, Any]:
    """The data window a partition saw: text (UTC and KST) for reading, timestamps for plotting."""
    from zoneinfo import ZoneInfo

    kst = ZoneInfo(PARTITION_TIMEZONE)
    return {
        "window": f"[{start.isoformat()}, {end.isoformat()}) UTC = "
                  f"[{start.astimezone(kst):%Y-%m-%d %H:%M}, {end.astimezone(kst):%Y-%m-%d %H:%M}) KST",
        "window_start": dg.MetadataValue.timestamp(start),
        "window_end": dg.MetadataValue.timestamp(end),
        "window_end_iso": end.isoformat(),
    }


def prefixed_counts(prefix: str, counts: Mapping[str, int]) -> dict[str, int]:
    """One numeric entry per reason, so each can be plotted across partitions."""
    return {f"{prefix}_{name}": int(value) for name, value in counts.items()}


# Dagit shows a float with all its digits (0.22713749110698700); four significant ones tell scores,
# times and densities apart. The registry and the artifact keep full precision.
SIGNIFICANT_DIGITS = 4


def rounded(value: Any) -> Any:
    """Floats to SIGNIFICANT_DIGITS significant digits: plain ones, dg.MetadataValue.float, and
    those inside dicts, lists and JSON metadata. Anything else as it is."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else value
    if isinstance(value, dg.FloatMetadataValue) and value.value is not None:
        return dg.MetadataValue.float(rounded(value.value))
    if isinstance(value, dg.JsonMetadataValue):
        return dg.MetadataValue.json(rounded(value.data))
    if isinstance(value, Mapping):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def location_metadata(uri: str) -> dg.MetadataValue:
    """Where a stored object is, for Dagit: a link for gs://, a local path for file://."""
    if uri.startswith("gs://"):
        return dg.MetadataValue.url(uri)
    return dg.MetadataValue.path(url2pathname(urlparse(uri).path) if uri.startswith("file://") else uri)


def rounded_result(result: Any) -> Any:
    """A MaterializeResult or an Output with its metadata rounded (`rounded`); anything else as it is."""
    if isinstance(result, dg.Output) and result.metadata:
        return dg.Output(result.value, result.output_name, metadata=rounded(result.metadata),
                         data_version=result.data_version, tags=result.tags)
    if not isinstance(result, dg.MaterializeResult) or not result.metadata:
        return result
    return dg.MaterializeResult(asset_key=result.asset_key, metadata=rounded(result.metadata),
                                check_results=result.check_results, data_version=result.data_version,
                                tags=result.tags, value=result.value)


_BARS = "▁▂▃▄▅▆▇█"
CURVE_COLUMNS = ("seconds", "loss", "ndcg@100", "recall@20", "recall@50")


def _finite(value: Any) -> float | None:
    """None for NaN or infinity (an epoch that was not scored): JSON has no NaN."""
    value = float(value)
    return value if math.isfinite(value) else None


def _sparkline(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    scale = (len(_BARS) - 1) / (high - low) if high > low else 0.0
    return "".join(" " if v is None else _BARS[round((v - low) * scale)] for v in values)


def _shown(value: float | None) -> str:
    return "?" if value is None else f"{value:.4g}"


def learning_curve_metadata(history: Sequence[Any]) -> dict[str, dg.MetadataValue]:
    """The training's epochs (recvae EpochReport: epoch, seconds, loss, ndcg_at_100, recall_at_20,
    recall_at_50, best) three ways: `learning_curve_chart`, one line per measure drawn in Markdown
    (first and last value, and the best epoch); `learning_curve_values`, the per-epoch series as
    JSON, to plot; `learning_curve`, the table."""
    series = {"epoch": [int(r.epoch) for r in history],
              **{name: [_finite(getattr(r, name.replace("@", "_at_"))) for r in history]
                 for name in CURVE_COLUMNS}}
    best = [int(r.epoch) for r in history if r.best]
    series["best_epoch"] = best[-1] if best else None
    lines = [f"{name:<9} {_sparkline(series[name])}  {_shown(series[name][0])} -> {_shown(series[name][-1])}"
             for name in ("loss", "ndcg@100", "recall@20", "recall@50") if series[name]]
    chart = (f"Epochs {series['epoch'][0]}..{series['epoch'][-1]}, best {series['best_epoch']} "
             f"(validation ndcg@100):\n\n```\n" + "\n".join(lines) + "\n```") if lines else "no epochs"
    table = md_table(["epoch", *CURVE_COLUMNS, "best"],
                     [(r.epoch, r.seconds, r.loss, r.ndcg_at_100, r.recall_at_20, r.recall_at_50,
                       "*" if r.best else "") for r in history])
    return {"learning_curve_chart": dg.MetadataValue.md(chart),
            "learning_curve_values": dg.MetadataValue.json(series),
            "learning_curve": table}
