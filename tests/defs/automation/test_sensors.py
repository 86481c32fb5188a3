"""The new-stars sensor against a real MongoDB-wire server and a real (temporary) Dagster instance."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from pymongo.database import Database

from batchrec_dagster.defs.automation.sensors import NEW_STARS_SENSOR_NAME, build_sensors
from batchrec_dagster.defs.automation.star_arrivals import (
    NewStarsCursor,
    decide_new_stars,
    latest_closed_partition,
)
from batchrec_dagster.defs.jobs import hourly_training_job
from batchrec_dagster.defs.resources import MongoResource
from batchrec_dagster.registry.models import ensure_indexes, register_model
from batchrec_dagster.settings import load_settings
from tests.harness.stubs import PARTITIONS, stub_assets

NOW = datetime(2026, 3, 1, 6, 20, tzinfo=UTC)  # 15:20 KST: the latest closed hour is 14:00-15:00
CLOSED_KEY = "2026-03-01-14:00"
CLOSED_START = datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
CLOSED_END = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def add_stars(db: Database, times: list[datetime]) -> None:
    db.stars.insert_many([{"user_id": i, "repo_id": 1000 + i, "starred_at": t} for i, t in enumerate(times)])


def register(db: Database, data_end: datetime, run_id: str | None = None) -> None:
    ensure_indexes(db)
    register_model(db, {"run_id": run_id or uuid.uuid4().hex, "partition_key": "k", "model_kind": "recvae",
                        "score": 0.3, "file_name": "m.pt", "bucket": "b", "sha256": "0" * 64,
                        "size_bytes": 1, "data_end": data_end})


def decide(db, instance, cursor=None, now=NOW, threshold=5):
    return decide_new_stars(db, instance, cursor or NewStarsCursor(), now=now, threshold=threshold,
                            partitions=PARTITIONS)


def test_latest_closed_partition_is_the_kst_hour_that_ended() -> None:
    assert latest_closed_partition(NOW) == (CLOSED_KEY, CLOSED_START, CLOSED_END)
    # exactly on the hour the hour that just ended is closed
    assert latest_closed_partition(CLOSED_END)[0] == CLOSED_KEY



def test_nothing_is_requested_before_the_first_partition_has_closed(mongo_db, instance) -> None:
    # 00:30 KST on 2026-01-01, before the first partition (2026-01-01-00:00) has closed
    decision = decide(mongo_db, instance, now=datetime(2025, 12, 31, 15, 30, tzinfo=UTC))
    assert decision.run_request is None and decision.skip_reason == "no hourly partition has closed yet"


def test_requests_the_closed_hour_once_the_threshold_is_reached(mongo_db, instance) -> None:
    register(mongo_db, CLOSED_START)  # the newest model has seen everything before 14:00 KST
    add_stars(mongo_db, [CLOSED_START - timedelta(minutes=1)] * 10)  # already in that model
    add_stars(mongo_db, [CLOSED_START + timedelta(minutes=m) for m in range(4)])
    below = decide(mongo_db, instance)
    assert below.run_request is None and below.new_stars == 4
    assert "fewer than the threshold 5" in below.skip_reason

    add_stars(mongo_db, [CLOSED_START + timedelta(minutes=30)])
    reached = decide(mongo_db, instance, below.cursor)
    assert reached.new_stars == 5
    request = reached.run_request
    assert request.partition_key == CLOSED_KEY
    assert request.run_key == f"new-stars-{CLOSED_KEY}"
    assert request.tags["batchrec/trigger"] == "new_stars"
    assert reached.cursor.requested_until == CLOSED_END.isoformat()


def test_stars_of_the_hour_in_progress_are_not_counted(mongo_db, instance) -> None:
    register(mongo_db, CLOSED_END)  # the closed hour is registered
    add_stars(mongo_db, [CLOSED_END + timedelta(minutes=1)] * 50)  # 15:01 KST, hour in progress
    decision = decide(mongo_db, instance)
    assert decision.run_request is None
    assert "already covered" in decision.skip_reason
    # an hour later those stars belong to the closed hour and trigger it
    later = decide(mongo_db, instance, decision.cursor, now=NOW + timedelta(hours=1))
    assert later.run_request.partition_key == "2026-03-01-15:00"
    assert later.new_stars == 5  # counting stops at the threshold


def test_never_requests_the_same_hour_twice_even_without_a_model_yet(mongo_db, instance) -> None:
    add_stars(mongo_db, [CLOSED_START + timedelta(minutes=m) for m in range(20)])
    first = decide(mongo_db, instance)
    assert first.run_request is not None
    # more stars arrive for the same hour before the requested run has registered anything
    add_stars(mongo_db, [CLOSED_START + timedelta(minutes=50)] * 10)
    second = decide(mongo_db, instance, first.cursor)
    assert second.run_request is None and "already covered" in second.skip_reason
    # a lost cursor (e.g. reset by hand) asks again, but with the same run key, which Dagster
    # drops as already requested
    again = decide(mongo_db, instance, NewStarsCursor())
    assert again.run_request.run_key == first.run_request.run_key


def test_cursor_survives_a_restart_and_is_quiet_when_nothing_changed(mongo_db, instance) -> None:
    add_stars(mongo_db, [CLOSED_START + timedelta(minutes=1)] * 2)
    first = decide(mongo_db, instance)
    assert first.run_request is None
    restored = NewStarsCursor.parse(first.cursor.dump())  # what the daemon stores and reloads
    assert restored == first.cursor
    quiet = decide(mongo_db, instance, restored)
    assert quiet.run_request is None and quiet.skip_reason == "nothing changed since the last tick"
    assert quiet.cursor == restored
    # garbage in the cursor starts over instead of crashing every tick
    assert NewStarsCursor.parse("{not json") == NewStarsCursor()
    assert NewStarsCursor.parse(json.dumps({"requested_until": None, "unknown": 1})) == NewStarsCursor()


def test_a_run_already_in_progress_for_the_hour_is_not_doubled(mongo_db, instance) -> None:
    """E.g. the schedule's run of that hour; the sensor only fills in when it failed."""
    add_stars(mongo_db, [CLOSED_START + timedelta(minutes=m) for m in range(10)])
    running = dg.DagsterRun(job_name="hourly_training_job", run_id=uuid.uuid4().hex,
                            status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": CLOSED_KEY})
    instance.add_run(running)
    blocked = decide(mongo_db, instance)
    assert blocked.run_request is None and running.run_id in blocked.skip_reason
    # the cursor does not remember the skip: if that run fails, the next tick looks again
    instance.report_run_failed(running)
    backfill_run = dg.DagsterRun(job_name="__ASSET_JOB", run_id=uuid.uuid4().hex,
                                 status=dg.DagsterRunStatus.STARTED,
                                 tags={"dagster/asset_partition_range_start": CLOSED_KEY,
                                       "dagster/asset_partition_range_end": CLOSED_KEY})
    instance.add_run(backfill_run)
    assert backfill_run.run_id in decide(mongo_db, instance, blocked.cursor).skip_reason
    instance.report_run_failed(backfill_run)
    retried = decide(mongo_db, instance, blocked.cursor)
    assert retried.run_request is not None and retried.run_request.partition_key == CLOSED_KEY


def test_a_registered_backfill_of_an_old_hour_does_not_trigger(mongo_db, instance) -> None:
    register(mongo_db, CLOSED_END)                              # current
    register(mongo_db, CLOSED_END - timedelta(days=30))         # registered later, older data
    add_stars(mongo_db, [CLOSED_START - timedelta(days=10)] * 20)
    decision = decide(mongo_db, instance)
    assert decision.run_request is None and "already covered" in decision.skip_reason


def test_sensor_definition_with_the_wall_clock(mongo_db, instance) -> None:
    """The sensor itself, as build_definitions makes it from the settings (BATCHREC_NEW_STARS_THRESHOLD
    3), evaluated like the daemon does, twice with the stored cursor."""
    settings = load_settings({"BATCHREC_NEW_STARS_THRESHOLD": "3"})
    key, start, _ = latest_closed_partition(datetime.now(UTC))
    add_stars(mongo_db, [start + timedelta(minutes=1)] * 3)
    mongo = MongoResource(uri=_uri(mongo_db), database=mongo_db.name)
    job = hourly_training_job(None)
    defs = dg.Definitions(assets=stub_assets(), jobs=[job], sensors=build_sensors(settings, job, PARTITIONS),
                          resources={"mongo": mongo})
    sensor = defs.resolve_sensor_def(NEW_STARS_SENSOR_NAME)
    with dg.build_sensor_context(instance=instance, definitions=defs, resources={"mongo": mongo}) as context:
        result = sensor.evaluate_tick(context)
    keys = {f"new-stars-{key}", f"new-stars-{latest_closed_partition(datetime.now(UTC))[0]}"}
    assert len(result.run_requests) == 1
    assert result.run_requests[0].run_key in keys  # (the second: the hour turned between the clocks)
    stored = NewStarsCursor.parse(result.cursor)
    assert stored.requested_until is not None
    with dg.build_sensor_context(instance=instance, definitions=defs, resources={"mongo": mongo},
                                 cursor=result.cursor) as context:
        again = sensor.evaluate_tick(context)
    assert again.run_requests == []
    assert again.skip_message


def _uri(db: Database) -> str:
    host, port = db.client.address
    return f"mongodb://{host}:{port}/?directConnection=true"
