"""The hourly schedule: a few minutes after each KST hour closes, materialize that hour.

Built from the partitioned job, so Dagster picks the partition: at a tick at 15:05 KST the latest
*closed* hourly partition is 14:00-15:00, key "YYYY-MM-DD-14:00". The minute offset
(`BATCHREC_SCHEDULE_MINUTE_OFFSET`, default 5) gives stars that are written a little late a chance
to land before their hour is read. The schedule runs as soon as the code location loads; stop it
in Dagit (Automation -> hourly_training_schedule) when you do not want hourly models.
"""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.jobs import hourly_training_job
from batchrec_dagster.settings import get_settings

SCHEDULE_NAME = "hourly_training_schedule"


def build_hourly_schedule(minute_offset: int | None = None):
    """The schedule over `hourly_training_job`; its timezone (Asia/Seoul) comes from the partitions."""
    minute = get_settings().schedule_minute_offset if minute_offset is None else minute_offset
    return dg.build_schedule_from_partitioned_job(
        hourly_training_job,
        name=SCHEDULE_NAME,
        minute_of_hour=minute,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(f"At minute {minute} of every hour (KST), materialize the hour that just closed: "
                     "read its stars, train RecVAE, register the model."),
        tags={"batchrec/trigger": "schedule"},
    )


hourly_training_schedule = build_hourly_schedule()

SCHEDULES = [hourly_training_schedule]
