"""The sensors' Dagster wiring: the rules they apply live in star_arrivals.py and run_failures.py.

new_stars_sensor (off by default): requests the latest closed KST hour once enough new stars have
arrived (star_arrivals.py). run_failure_recorder (on): records every failed run in MongoDB
`run_failures` and in its tick log (run_failures.py). stale_run_reaper (on): fails runs whose
process died, which frees the training pool (defs/instance/run_reaper.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from batchrec_dagster.defs.automation.run_failures import (
    RUN_FAILURES,
    failure_document,
    failure_reason,
    record_failure,
)
from batchrec_dagster.defs.automation.star_arrivals import RUN_KEY_PREFIX, NewStarsCursor, decide_new_stars
from batchrec_dagster.defs.instance.run_reaper import stale_run_reaper
from batchrec_dagster.defs.resources import MongoResource
from batchrec_dagster.settings import Settings

NEW_STARS_SENSOR_NAME = "new_stars_sensor"
RUN_FAILURE_SENSOR_NAME = "run_failure_recorder"


def build_new_stars_sensor(training_job: Any, threshold: int, interval_seconds: int,
                           partitions: dg.TimeWindowPartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=NEW_STARS_SENSOR_NAME,
        job=training_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Requests the latest closed KST hour as soon as at least BATCHREC_NEW_STARS_THRESHOLD stars "
            f"(now {threshold}) have arrived since the newest registered model's "
            "data_end, unless that hour is already registered or running. "
            "Run key new-stars-<hour>: never twice."),
        metadata={"watches": "MongoDB stars.starred_at", "threshold": threshold,
                  "run_key": f"{RUN_KEY_PREFIX}<partition key>"},
    )
    def new_stars_sensor(context: dg.SensorEvaluationContext, mongo: MongoResource):
        cursor = NewStarsCursor.parse(context.cursor)
        decision = decide_new_stars(mongo.get_database(), context.instance, cursor, now=datetime.now(UTC),
                                    threshold=threshold, partitions=partitions)
        if decision.cursor != cursor:
            context.update_cursor(decision.cursor.dump())
        if decision.run_request is None:
            return dg.SkipReason(decision.skip_reason)
        context.log.info(f"requesting {decision.partition_key}: {decision.new_stars} new stars")
        return decision.run_request

    return new_stars_sensor


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
    context.log.error(f"run {document['run_id']} of {document['job_name']} failed "
                      f"(partition {document['partition_key']}): {failure_reason(document)}")


def build_sensors(settings: Settings, training_job: Any,
                  partitions: dg.TimeWindowPartitionsDefinition) -> list[dg.SensorDefinition]:
    new_stars = build_new_stars_sensor(training_job, settings.new_stars_threshold,
                                       settings.sensor_interval_seconds, partitions)
    return [new_stars, run_failure_recorder, stale_run_reaper(settings.run_reaper_interval_seconds)]
