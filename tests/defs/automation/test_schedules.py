"""The hourly schedule picks the KST hour that just closed, across day, month and year boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from batchrec_dagster.defs.automation.schedules import SCHEDULE_NAME, build_hourly_schedule
from batchrec_dagster.defs.jobs import hourly_training_job
from batchrec_dagster.defs.partitions import partition_window
from tests.harness.stubs import PARTITIONS, stub_assets

KST = ZoneInfo("Asia/Seoul")


def _schedule(minute_offset: int) -> dg.ScheduleDefinition:
    job = hourly_training_job(None)
    defs = dg.Definitions(assets=stub_assets(), jobs=[job],
                          schedules=[build_hourly_schedule(job, minute_offset)])
    return defs.resolve_schedule_def(SCHEDULE_NAME)


def _tick(schedule: dg.ScheduleDefinition, at: datetime) -> dg.RunRequest:
    with dg.instance_for_test() as instance:
        result = schedule.evaluate_tick(dg.build_schedule_context(instance=instance,
                                                                  scheduled_execution_time=at))
    assert len(result.run_requests) == 1, result.skip_message
    return result.run_requests[0]


@pytest.mark.parametrize(("tick", "expected"), [
    (datetime(2026, 3, 1, 15, 5, tzinfo=KST), "2026-03-01-14:00"),
    # KST midnight: the closed hour belongs to the previous day
    (datetime(2026, 3, 2, 0, 5, tzinfo=KST), "2026-03-01-23:00"),
    # the same instant given in UTC (15:05 UTC is 00:05 KST the next day)
    (datetime(2026, 3, 1, 15, 5, tzinfo=UTC), "2026-03-01-23:00"),
    # 09:05 KST is 00:05 UTC: the UTC day boundary is not a KST one
    (datetime(2026, 3, 2, 0, 5, tzinfo=UTC), "2026-03-02-08:00"),
    (datetime(2027, 1, 1, 0, 5, tzinfo=KST), "2026-12-31-23:00"),
])
def test_tick_materializes_the_kst_hour_that_just_closed(tick: datetime, expected: str) -> None:
    request = _tick(_schedule(5), tick)
    assert request.partition_key == expected
    assert request.run_key == expected
    assert request.tags["batchrec/trigger"] == "schedule"
    start, end = partition_window(expected)
    assert end == (tick - timedelta(minutes=5)).astimezone(UTC)
    assert end - start == timedelta(hours=1)


def test_minute_offset_sets_the_cron_and_timezone_and_it_runs_by_default() -> None:
    schedule = _schedule(17)
    assert schedule.cron_schedule == "17 * * * *"
    assert schedule.execution_timezone == "Asia/Seoul"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert _tick(schedule, datetime(2026, 3, 2, 0, 17, tzinfo=KST)).partition_key == "2026-03-01-23:00"




def test_the_evaluation_schedule_scores_the_closed_hour_before_training_starts() -> None:
    from batchrec_dagster.defs.automation.schedules import EVALUATION_SCHEDULE_NAME, build_evaluation_schedule
    from batchrec_dagster.defs.jobs import model_evaluation_job
    from batchrec_dagster.settings import load_settings

    @dg.asset(name="model_evaluation", partitions_def=PARTITIONS)
    def _evaluation_stub() -> None:
        return None

    job = model_evaluation_job()
    defs = dg.Definitions(assets=[_evaluation_stub], jobs=[job],
                          schedules=[build_evaluation_schedule(job, 1)])
    schedule = defs.resolve_schedule_def(EVALUATION_SCHEDULE_NAME)
    assert schedule.cron_schedule == "1 * * * *" and schedule.execution_timezone == "Asia/Seoul"
    assert schedule.job_name == "model_evaluation_job"
    assert _tick(schedule, datetime(2026, 3, 1, 15, 1, tzinfo=KST)).partition_key == "2026-03-01-14:00"
    # by default, at minute 1: before the training schedule's minute 5
    defaults = load_settings({})
    assert defaults.evaluation_minute_offset < defaults.schedule_minute_offset
