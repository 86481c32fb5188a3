"""The run-failure sensor records a real failed run in MongoDB `run_failures`, once."""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.defs.automation.run_failures import RUN_FAILURES, run_partition
from batchrec_dagster.defs.automation.sensors import RUN_FAILURE_SENSOR_NAME, run_failure_recorder
from batchrec_dagster.defs.resources import MongoResource
from tests.defs.automation.test_sensors import _uri
from tests.harness.stubs import PARTITIONS

PARTITION = "2026-03-01-14:00"


@dg.asset(name="recvae_model", partitions_def=PARTITIONS)
def exploding_model() -> None:
    raise RuntimeError("CUDA out of memory (simulated)")


def test_failed_run_is_recorded_with_partition_and_error(mongo_db) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize([exploding_model], partition_key=PARTITION, instance=instance,
                                raise_on_error=False, tags={"batchrec/trigger": "schedule"})
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = instance.get_records_for_run(
            result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records[0].event_log_entry
        mongo = MongoResource(uri=_uri(mongo_db), database=mongo_db.name)
        for _ in range(2):  # a tick retried after a crash must not duplicate the record
            with dg.build_run_status_sensor_context(
                sensor_name=RUN_FAILURE_SENSOR_NAME, dagster_event=failure.dagster_event,
                dagster_instance=instance, dagster_run=run, resources={"mongo": mongo},
            ) as context:
                run_failure_recorder(context.for_run_failure())

    docs = list(mongo_db[RUN_FAILURES].find({"run_id": result.run_id}))
    assert len(docs) == 1
    doc = docs[0]
    assert doc["partition_key"] == PARTITION
    assert doc["job_name"] == run.job_name
    assert doc["assets"] == ["recvae_model"]
    assert doc["failed_at"].tzinfo is not None
    assert doc["trigger"] == {"batchrec/trigger": "schedule"}
    assert [s["step_key"] for s in doc["step_failures"]] == ["recvae_model"]
    assert "CUDA out of memory (simulated)" in doc["step_failures"][0]["message"]
    assert doc["step_failures"][0]["error_class"] == "RuntimeError"
    assert "recvae_model" in doc["error"]
    assert doc["failed_checks"] == []


def test_backfill_runs_name_their_partition_range() -> None:
    assert run_partition({"dagster/partition": "2026-03-01-14:00"}) == "2026-03-01-14:00"
    one = {"dagster/asset_partition_range_start": "2026-03-01-14:00",
           "dagster/asset_partition_range_end": "2026-03-01-14:00"}
    assert run_partition(one) == "2026-03-01-14:00"
    assert run_partition({**one, "dagster/asset_partition_range_end": "2026-03-01-16:00"}) \
        == "2026-03-01-14:00...2026-03-01-16:00"
    assert run_partition({}) is None
