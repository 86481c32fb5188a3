"""The hourly partitions every asset shares, in Korea Standard Time."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from batchrec_dagster.settings import PARTITION_TIMEZONE, get_settings

hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=get_settings().partitions_start,
    timezone=PARTITION_TIMEZONE,
)


def partition_window(partition_key: str) -> tuple[datetime, datetime]:
    """The partition's [start, end) in UTC: a partition sees stars with starred_at < end."""
    window = hourly_partitions.time_window_for_partition_key(partition_key)
    return window.start.astimezone(UTC), window.end.astimezone(UTC)
