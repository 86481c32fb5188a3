"""Sensors: start a run when enough new stars arrive, and record every failed run.

new_stars_sensor
    "Current partition" is the latest *closed* KST hour. An hour in progress is not a Dagster
    partition yet (the hourly partitions end at the last closed hour), and a model registered for
    an hour must be trained only on stars before that hour's end; so the sensor cannot train on the
    hour in progress. What it does: it counts the stars that the latest closed hour would add to
    the newest registered model (`since <= starred_at < hour end`, where `since` is the largest
    `data_end` in the registry), and once there are at least `BATCHREC_NEW_STARS_THRESHOLD` of them
    and nothing is already registered or running for that hour, it requests that hour at once,
    instead of waiting for the schedule's minute offset. It also catches up when the schedule is
    stopped or the scheduled run failed.

    * never the same work twice: the run key is `new-stars-<partition key>`; Dagster drops a second
      request with a key it has seen, even after a daemon restart;
    * survives restarts: the cursor (JSON) keeps `requested_until`, the end of the last hour it
      requested, so stars handed to a run that has not registered yet are not counted again, and a
      fingerprint of what it last saw;
    * quiet when nothing changed: when the newest star, the registry and the closed hour are what
      the cursor remembers it skips without counting.

run_failure_recorder
    Writes one document per failed run to MongoDB `run_failures` (unique by run_id, so a retried
    tick never duplicates) with what failed, when, which partition and the errors, and logs it to the
    sensor's tick log in Dagit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pymongo
import pymongo.errors
from pymongo.database import Database

from batchrec_dagster.jobs import hourly_training_job
from batchrec_dagster.mongo import MongoResource
from batchrec_dagster.partitions import hourly_partitions
from batchrec_dagster.registry import MODELS
from batchrec_dagster.settings import PARTITION_TIMEZONE, env_number

STARS = "stars"
RUN_FAILURES = "run_failures"
NEW_STARS_SENSOR_NAME = "new_stars_sensor"
RUN_FAILURE_SENSOR_NAME = "run_failure_recorder"
DEFAULT_NEW_STARS_THRESHOLD = 1000
DEFAULT_SENSOR_INTERVAL_S = 60
RUN_KEY_PREFIX = "new-stars-"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# runs that will register (or are registering) a model for their partition
_ACTIVE_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def new_stars_threshold(environ: dict[str, str] | None = None) -> int:
    return env_number("BATCHREC_NEW_STARS_THRESHOLD", DEFAULT_NEW_STARS_THRESHOLD, kind=int,
                      minimum=1, environ=environ)


def sensor_interval_seconds(environ: dict[str, str] | None = None) -> int:
    return env_number("BATCHREC_SENSOR_INTERVAL_SECONDS", DEFAULT_SENSOR_INTERVAL_S, kind=int,
                      minimum=5, environ=environ)


# --------------------------------------------------------------------------- new stars


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


def latest_closed_partition(now: datetime) -> tuple[str, datetime, datetime] | None:
    """The latest KST hour that has ended at `now`: (key, start UTC, end UTC), or None before start."""
    # KST has no daylight saving time, so an hour is always 3600 seconds and flooring is exact
    local = now.astimezone(ZoneInfo(PARTITION_TIMEZONE))
    end = local.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=1)
    if start < hourly_partitions.start:
        return None
    return start.strftime(hourly_partitions.fmt), start.astimezone(UTC), end.astimezone(UTC)


def registered_until(db: Database, model_kind: str = "recvae") -> datetime | None:
    """The largest data_end in the registry: the newest data any registered model has seen.

    Not `latest_entry` (newest created_at): a backfill of an old hour registers late but sees old data.
    Sort + limit rather than $max, which nx-27017 returns as a string for dates.
    """
    doc = next(iter(db[MODELS].find({"model_kind": model_kind}, {"data_end": 1})
                    .sort([("data_end", pymongo.DESCENDING)]).limit(1)), None)
    return doc["data_end"].astimezone(UTC) if doc else None


def newest_star_at(db: Database) -> datetime | None:
    # a range on a date matches dates only (MongoDB compares within a type); `$type: "date"` would
    # say the same but nx-27017 does not match it
    doc = next(iter(db[STARS].find({"starred_at": {"$gte": _EPOCH}}, {"starred_at": 1})
                    .sort([("starred_at", pymongo.DESCENDING)]).limit(1)), None)
    return doc["starred_at"].astimezone(UTC) if doc else None


def count_stars(db: Database, since: datetime | None, until: datetime, limit: int) -> int:
    """Stars with since <= starred_at < until, counted up to `limit` (enough to decide).

    A bounded find on the indexed starred_at, not count_documents: cheap on a large collection and
    exact on both MongoDB and nx-27017.
    """
    bounds: dict[str, datetime] = {"$lt": until}
    if since is not None:
        bounds["$gte"] = since
    return sum(1 for _ in db[STARS].find({"starred_at": bounds}, {"_id": 1}).limit(limit))


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
                     now: datetime, threshold: int) -> NewStarsDecision:
    """One evaluation of the new-stars rule at `now` (the sensor passes the wall clock)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    closed = latest_closed_partition(now)
    if closed is None:
        return NewStarsDecision(cursor, skip_reason="no hourly partition has closed yet")
    key, _, hour_end = closed
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


@dg.sensor(
    name=NEW_STARS_SENSOR_NAME,
    job=hourly_training_job,
    minimum_interval_seconds=sensor_interval_seconds(),
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Requests the latest closed KST hour as soon as at least BATCHREC_NEW_STARS_THRESHOLD stars "
        f"(now {new_stars_threshold()}) have arrived since the newest registered model's data_end, "
        "unless that hour is already registered or running. Run key new-stars-<hour>: never twice."),
    metadata={"watches": "MongoDB stars.starred_at", "threshold": new_stars_threshold(),
              "run_key": f"{RUN_KEY_PREFIX}<partition key>"},
)
def new_stars_sensor(context: dg.SensorEvaluationContext, mongo: MongoResource):
    cursor = NewStarsCursor.parse(context.cursor)
    decision = decide_new_stars(mongo.get_database(), context.instance, cursor,
                                now=datetime.now(UTC), threshold=new_stars_threshold())
    if decision.cursor != cursor:
        context.update_cursor(decision.cursor.dump())
    if decision.run_request is None:
        return dg.SkipReason(decision.skip_reason)
    context.log.info(f"requesting {decision.partition_key}: {decision.new_stars} new stars")
    return decision.run_request


# --------------------------------------------------------------------------- run failures


def _root_error(error: Any) -> Any:
    """The user's exception inside Dagster's wrappers (DagsterExecutionStepExecutionError etc.)."""
    while error is not None and getattr(error, "cause", None) is not None \
            and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    return error


def _planned_assets(context: dg.RunFailureSensorContext) -> list[str]:
    run = context.dagster_run
    if run.asset_selection:
        return sorted(key.to_user_string() for key in run.asset_selection)
    # whole-job runs (schedule, sensor) carry no selection: the planned materializations say it
    records = context.instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=100).records
    return sorted({r.event_log_entry.dagster_event.asset_key.to_user_string() for r in records
                   if r.event_log_entry.dagster_event and r.event_log_entry.dagster_event.asset_key})


def run_partition(tags: dict[str, str]) -> str | None:
    """The run's partition: its partition tag, or the range a backfill run carries ("a...b")."""
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}...{end}"
    return None


def _failed_checks(context: dg.RunFailureSensorContext) -> list[dict[str, Any]]:
    """Checks that did not pass in the run, with their reason (the step error only says "failed")."""
    records = context.instance.get_records_for_run(
        context.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=100).records
    failed = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            failed.append({"asset": evaluation.asset_key.to_user_string(), "check": evaluation.check_name,
                           "severity": evaluation.severity.value,
                           "description": (evaluation.description or "")[:4000]})
    return failed


def failure_document(context: dg.RunFailureSensorContext) -> dict[str, Any]:
    """What an operator needs to see about one failed run."""
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        error = _root_error(getattr(event.event_specific_data, "error", None))
        steps.append({
            "step_key": event.step_key,
            "error_class": getattr(error, "cls_name", None),
            "message": (getattr(error, "message", None) or event.message or "").strip()[:4000],
        })
    entry_time = getattr(context.failure_event, "timestamp", None)
    tags = dict(run.tags)
    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "partition_key": run_partition(tags),
        "assets": _planned_assets(context),
        "failed_at": datetime.fromtimestamp(entry_time, UTC) if entry_time else datetime.now(UTC),
        "error": (context.failure_event.message or "").strip()[:4000],
        "step_failures": steps,
        "failed_checks": _failed_checks(context),
        "trigger": {k: v for k, v in tags.items()
                    if k in ("dagster/schedule_name", "dagster/sensor_name", "dagster/backfill",
                             "batchrec/trigger")},
        "recorded_at": datetime.now(UTC),
    }


def record_failure(db: Database, document: dict[str, Any]) -> bool:
    """Insert the record once per run (a tick retried after a crash finds it there); True if new.

    Insert-or-skip on a unique run_id rather than an upsert with $set: the first record is complete,
    and nx-27017 stores datetimes $set onto an existing document as strings.
    """
    db[RUN_FAILURES].create_index([("run_id", pymongo.ASCENDING)], unique=True, name="run_id_unique")
    try:
        db[RUN_FAILURES].insert_one(dict(document))
    except pymongo.errors.DuplicateKeyError:
        return False
    return True


@dg.run_failure_sensor(
    name=RUN_FAILURE_SENSOR_NAME,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Records every failed run of this code location (job, partition, time, errors) in "
                 "MongoDB collection `run_failures` and in this sensor's tick logs."),
    metadata={"collection": RUN_FAILURES},
)
def run_failure_recorder(context: dg.RunFailureSensorContext, mongo: MongoResource) -> None:
    document = failure_document(context)
    if not record_failure(mongo.get_database(), document):
        context.log.info(f"run {document['run_id']} was already recorded")
        return
    checks, steps = document["failed_checks"], document["step_failures"]
    if checks:
        reason = "; ".join(f"check {c['check']} on {c['asset']}: {c['description']}" for c in checks)
    else:
        reason = ((steps[0]["message"] if steps else document["error"]) or "no error message").splitlines()[0]
    context.log.error(f"run {document['run_id']} of {document['job_name']} failed "
                      f"(partition {document['partition_key']}): {reason}")


SENSORS = [new_stars_sensor, run_failure_recorder]
