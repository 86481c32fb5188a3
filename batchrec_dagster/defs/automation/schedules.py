"""The hourly schedules: a few minutes after each KST hour closes, evaluate it (minute 1) and
materialize it (minute 5).

Built from the partitioned job, so Dagster picks the partition: at a tick at 15:05 KST the latest
*closed* hourly partition is 14:00-15:00, key "YYYY-MM-DD-14:00". The minute offset
(`BATCHREC_SCHEDULE_MINUTE_OFFSET`, default 5) gives stars that are written a little late a chance
to land before their hour is read. The schedule runs as soon as the code location loads; stop it
in Dagit (Automation -> hourly_training_schedule) when you do not want hourly models.
`model_evaluation_schedule` scores the registered models on the closed hour and decides the champion
(docs/pipeline.md, "Which model is served").
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from batchrec_dagster.settings import Settings

SCHEDULE_NAME = "hourly_training_schedule"
EVALUATION_SCHEDULE_NAME = "model_evaluation_schedule"


def _closed_hour_schedule(job: Any, name: str, minute: int, what: str):  # an asset job
    """At `minute` of every KST hour, run `job` for the hour that just closed (the timezone comes
    from the partitions)."""
    return dg.build_schedule_from_partitioned_job(
        job,
        name=name,
        minute_of_hour=minute,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"At minute {minute} of every hour (KST), {what}",
        tags={"batchrec/trigger": "schedule"},
    )


def build_hourly_schedule(training_job: Any, minute: int):
    """At minute BATCHREC_SCHEDULE_MINUTE_OFFSET (default 5) of each KST hour, train the hour that
    just closed."""
    return _closed_hour_schedule(training_job, SCHEDULE_NAME, minute,
                                 "materialize the hour that just closed: read its stars, train RecVAE, "
                                 "register the model.")


def build_evaluation_schedule(evaluation_job: Any, minute: int):
    """At minute BATCHREC_EVALUATION_MINUTE_OFFSET (default 1) of each KST hour, evaluate the hour
    that just closed. Before the training schedule's minute, so that a model registered during the
    previous hour is compared (and can be promoted) within an hour of its registration."""
    return _closed_hour_schedule(evaluation_job, EVALUATION_SCHEDULE_NAME, minute,
                                 "score every fresh model on the stars of the hour that just closed and "
                                 "decide the champion.")


def build_schedules(settings: Settings, training_job: Any,
                    evaluation_job: Any) -> list[dg.ScheduleDefinition]:
    return [build_hourly_schedule(training_job, settings.schedule_minute_offset),
            build_evaluation_schedule(evaluation_job, settings.evaluation_minute_offset)]
