"""The hourly partitions every asset shares, in Korea Standard Time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from batchrec_dagster.settings import PARTITION_KEY_FORMAT, PARTITION_TIMEZONE, Settings

HOUR = timedelta(hours=1)
KST = ZoneInfo(PARTITION_TIMEZONE)


def hourly_partitions(settings: Settings) -> dg.HourlyPartitionsDefinition:
    """KST hours from BATCHREC_PARTITIONS_START to the last closed hour."""
    return dg.HourlyPartitionsDefinition(start_date=settings.partitions_start, timezone=PARTITION_TIMEZONE)


def partition_window(partition_key: str) -> tuple[datetime, datetime]:
    """The partition's [start, end) in UTC: a partition sees stars with starred_at < end. KST has no
    daylight saving time, so the key's wall-clock hour plus one hour is the window."""
    start = datetime.strptime(partition_key, PARTITION_KEY_FORMAT).replace(tzinfo=KST)
    return start.astimezone(UTC), (start + HOUR).astimezone(UTC)


def checked_partition_key(partitions: dg.TimeWindowPartitionsDefinition, key: str) -> str:
    """`key` if it is an hour of `partitions` that has ended; else ValueError with one line that
    says why (the format, before the first partition, or not ended yet)."""
    try:
        hour = datetime.strptime(key, PARTITION_KEY_FORMAT)
    except ValueError:
        hour = None
    if hour is None or hour.minute != 0 or hour.strftime(PARTITION_KEY_FORMAT) != key:
        raise ValueError(f"{key!r} is not an hour's partition key (KST, e.g. 2026-03-01-20:00)")
    if partitions.has_partition_key(key):
        return key
    first = partitions.get_first_partition_key()
    if first is not None and hour < datetime.strptime(first, PARTITION_KEY_FORMAT):
        raise ValueError(f"hour {key} is before the first partition {first} (BATCHREC_PARTITIONS_START)")
    latest = partitions.get_last_partition_key()
    raise ValueError(f"hour {key} (KST) has not ended yet; the latest closed hour is {latest}")


def daily_full_run(partition_key: str, full_run_hour: int) -> str | None:
    """Why this hour is the daily full run (BATCHREC_FULL_RUN_HOUR, KST), or None when it is not.
    The keys are KST wall-clock hours, so the key's own hour is the one to compare."""
    if datetime.strptime(partition_key, PARTITION_KEY_FORMAT).hour != full_run_hour:
        return None
    return f"daily full run at {full_run_hour:02d}:00 KST (BATCHREC_FULL_RUN_HOUR)"
