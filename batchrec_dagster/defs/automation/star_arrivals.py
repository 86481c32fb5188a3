"""The new-stars rule: when enough stars arrived, request the latest closed KST hour.

"Current partition" is the latest *closed* KST hour. An hour in progress is not a Dagster partition
yet (the hourly partitions end at the last closed hour), and a model registered for an hour must be
trained only on stars before that hour's end; so the sensor cannot train on the hour in progress.
What it does: it counts the stars that the latest closed hour would add to the newest registered
model (`since <= starred_at < hour end`, where `since` is the largest `data_end` in the registry),
and once there are at least `BATCHREC_NEW_STARS_THRESHOLD` of them and nothing is already
registered or running for that hour, it requests that hour at once, instead of waiting for the
schedule's minute offset. It also catches up when the schedule is stopped or the scheduled run failed.

* never the same work twice: the run key is `new-stars-<partition key>`; Dagster drops a second
  request with a key it has seen, even after a daemon restart;
* survives restarts: the cursor (JSON) keeps `requested_until`, the end of the last hour it
  requested, so stars handed to a run that has not registered yet are not counted again, and a
  fingerprint of what it last saw;
* quiet when nothing changed: when the newest star, the registry and the closed hour are what
  the cursor remembers it skips without counting.

The sensor that evaluates it every BATCHREC_SENSOR_INTERVAL_SECONDS is in sensors.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from pymongo.database import Database

from batchrec_dagster.registry.models import registered_until
from batchrec_dagster.settings import PARTITION_KEY_FORMAT, PARTITION_TIMEZONE
from batchrec_dagster.sources.collections import count_stars, newest_star_at

RUN_KEY_PREFIX = "new-stars-"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# runs that will register (or are registering) a model for their partition
_ACTIVE_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value else None


@dataclass(frozen=True)
class NewStarsCursor:
    """What the sensor remembers between ticks (and daemon restarts), stored as JSON."""

    requested_until: str | None = None   # end (UTC) of the last hour this sensor requested
    newest_star_at: str | None = None    # fingerprint: newest starred_at seen
    registered_until: str | None = None  # fingerprint: largest registered data_end seen
    closed_partition: str | None = None  # fingerprint: latest closed hour seen

    @classmethod
    def parse(cls, raw: str | None) -> NewStarsCursor:
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
            return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            # an unreadable cursor must not wedge the sensor: start over; run keys still
            # prevent requesting an hour twice
            return cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class NewStarsDecision:
    cursor: NewStarsCursor
    run_request: dg.RunRequest | None = None
    skip_reason: str | None = None
    new_stars: int = 0
    partition_key: str | None = None


def latest_closed_partition(now: datetime) -> tuple[str, datetime, datetime]:
    """The latest KST hour that has ended at `now`: (key, start UTC, end UTC)."""
    # KST has no daylight saving time, so an hour is always 3600 seconds and flooring is exact
    local = now.astimezone(ZoneInfo(PARTITION_TIMEZONE))
    end = local.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=1)
    return start.strftime(PARTITION_KEY_FORMAT), start.astimezone(UTC), end.astimezone(UTC)


def active_runs_for_partition(instance: dg.DagsterInstance, partition_key: str) -> list[str]:
    """Ids of queued or in-progress runs for the partition (any trigger, backfills included)."""
    by_tag = [{PARTITION_TAG: partition_key},
              # asset backfills tag their runs with a range, even a one-partition one
              {RANGE_START_TAG: partition_key, RANGE_END_TAG: partition_key}]
    run_ids: list[str] = []
    for tags in by_tag:
        records = instance.get_run_records(filters=dg.RunsFilter(tags=tags, statuses=_ACTIVE_STATUSES),
                                           limit=5)
        run_ids += [record.dagster_run.run_id for record in records]
    return run_ids


def decide_new_stars(db: Database, instance: dg.DagsterInstance, cursor: NewStarsCursor, *,
                     now: datetime, threshold: int,
                     partitions: dg.TimeWindowPartitionsDefinition) -> NewStarsDecision:
    """One evaluation of the new-stars rule at `now` (the sensor passes the wall clock)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    key, hour_start, hour_end = latest_closed_partition(now)
    if hour_start < partitions.start:
        return NewStarsDecision(cursor, skip_reason="no hourly partition has closed yet")
    newest = newest_star_at(db)
    registered = registered_until(db)
    fingerprint = NewStarsCursor(cursor.requested_until, _iso(newest), _iso(registered), key)
    if fingerprint == cursor:
        return NewStarsDecision(cursor, skip_reason="nothing changed since the last tick", partition_key=key)

    requested = _parse(cursor.requested_until)
    since = max((t for t in (registered, requested) if t is not None), default=None)
    if since is not None and since >= hour_end:
        return NewStarsDecision(fingerprint, partition_key=key, skip_reason=(
            f"hour {key} is already covered (models or requests up to {_iso(since)})"))
    count = count_stars(db, since, hour_end, threshold)
    window = f"[{_iso(since) or 'the beginning'}, {_iso(hour_end)})"
    if count < threshold:
        return NewStarsDecision(fingerprint, new_stars=count, partition_key=key, skip_reason=(
            f"{count} new stars in {window}, fewer than the threshold {threshold}"))
    active = active_runs_for_partition(instance, key)
    if active:
        # keep the old cursor: if that run fails, the next tick must look again although
        # no star, model or hour changed
        return NewStarsDecision(cursor, new_stars=count, partition_key=key, skip_reason=(
            f"{count}+ new stars, but hour {key} already has run(s) in progress: {', '.join(active)}"))
    request = dg.RunRequest(
        run_key=f"{RUN_KEY_PREFIX}{key}",
        partition_key=key,
        tags={"batchrec/trigger": "new_stars", "batchrec/new_stars": str(count),
              "batchrec/new_stars_since": _iso(since) or ""},
    )
    advanced = NewStarsCursor(_iso(hour_end), fingerprint.newest_star_at,
                              fingerprint.registered_until, key)
    return NewStarsDecision(advanced, run_request=request, new_stars=count, partition_key=key)
