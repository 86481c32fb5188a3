"""The hourly partitions every asset shares, in Korea Standard Time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from batchrec_dagster.settings import PARTITION_KEY_FORMAT, PARTITION_TIMEZONE, get_settings

hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=get_settings().partitions_start,
    timezone=PARTITION_TIMEZONE,
)


def partition_window(partition_key: str) -> tuple[datetime, datetime]:
    """The partition's [start, end) in UTC: a partition sees stars with starred_at < end."""
    window = hourly_partitions.time_window_for_partition_key(partition_key)
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def checked_partition_key(key: str) -> str:
    """`key` if it is an hour of the partitions that has ended; else ValueError with one line that
    says why (the format, before the first partition, or not ended yet)."""
    try:
        hour = datetime.strptime(key, PARTITION_KEY_FORMAT)
    except ValueError:
        hour = None
    if hour is None or hour.minute != 0 or hour.strftime(PARTITION_KEY_FORMAT) != key:
        raise ValueError(f"{key!r} is not an hour's partition key (KST, e.g. 2026-03-01-20:00)")
    if hourly_partitions.has_partition_key(key):
        return key
    first = hourly_partitions.get_first_partition_key()
    if first is not None and hour < datetime.strptime(first, PARTITION_KEY_FORMAT):
        raise ValueError(f"hour {key} is before the first partition {first} (BATCHREC_PARTITIONS_START)")
    latest = hourly_partitions.get_last_partition_key()
    raise ValueError(f"hour {key} (KST) has not ended yet; the latest closed hour is {latest}")


def daily_full_run(partition_key: str, full_run_hour: int | None = None) -> str | None:
    """Why this hour is the daily full run (BATCHREC_FULL_RUN_HOUR, KST), or None when it is not.
    The keys are KST wall-clock hours, so the key's own hour is the one to compare."""
    hour = get_settings().full_run_hour if full_run_hour is None else full_run_hour
    if datetime.strptime(partition_key, PARTITION_KEY_FORMAT).hour != hour:
        return None
    return f"daily full run at {hour:02d}:00 KST (BATCHREC_FULL_RUN_HOUR)"


def previous_partition_key(partition_key: str) -> str | None:
    """The hour before, or None before the first partition. KST has no daylight saving time, so
    the key's wall-clock hour minus one is the previous partition."""
    previous = (datetime.strptime(partition_key, PARTITION_KEY_FORMAT) - timedelta(hours=1)
                ).strftime(PARTITION_KEY_FORMAT)
    return previous if hourly_partitions.has_partition_key(previous) else None
