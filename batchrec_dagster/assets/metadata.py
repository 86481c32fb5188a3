"""Metadata helpers shared by the assets: markdown tables, the data window, counters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

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
