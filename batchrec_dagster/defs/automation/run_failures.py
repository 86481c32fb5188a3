"""Failed runs, recorded for operators: one document per run in MongoDB `run_failures` (unique by
run_id, so a retried tick never duplicates) with what failed, when, which partition and the errors.
The sensor that calls this (`run_failure_recorder`) is in sensors.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pymongo
import pymongo.errors
from pymongo.database import Database

from batchrec_dagster.defs.automation.star_arrivals import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG

RUN_FAILURES = "run_failures"


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

    Insert-or-skip on a unique run_id: the first record is complete, a later one adds nothing.
    """
    db[RUN_FAILURES].create_index([("run_id", pymongo.ASCENDING)], unique=True, name="run_id_unique")
    try:
        db[RUN_FAILURES].insert_one(dict(document))
    except pymongo.errors.DuplicateKeyError:
        return False
    return True




def failure_reason(document: dict[str, Any]) -> str:
    """One line: the failed checks, else the first step error, else the run's error."""
    checks, steps = document["failed_checks"], document["step_failures"]
    if checks:
        return "; ".join(f"check {c['check']} on {c['asset']}: {c['description']}" for c in checks)
    return ((steps[0]["message"] if steps else document["error"]) or "no error message").splitlines()[0]
