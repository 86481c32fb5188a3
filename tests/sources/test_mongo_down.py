"""MongoDB stopped during the assets: the run fails visibly, nothing half-registered, a re-run works."""

from __future__ import annotations

import dagster as dg
import pytest

from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.registry.models import MODELS, entries_for_partition
from batchrec_dagster.settings import get_settings
from batchrec_dagster.sources.demo_data import load_demo
from batchrec_dagster.sources.mongo import connect
from batchrec_dagster.storage.blobs import blob_store_for, read_verified
from tests.harness.deployments import TINY_DEMO, tiny_run_config
from tests.harness.faults import FAULTS_DATABASE

# fault injection on real servers: run alone with `pytest -m faults`
pytestmark = pytest.mark.faults

KEY = "2026-03-01-20:00"
READS_MONGO = ["raw_repositories"]
NO_MONGO = ["user_item_matrix", "vae_input"]
TRAINS = ["recvae_model"]  # reads the registry for a model to warm-start from
WRITES_MONGO = ["model_registry_entry"]


def _run(instance: dg.DagsterInstance, assets: list[str]) -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_implicit_global_asset_job_def()
    return job.execute_in_process(partition_key=KEY, run_config=tiny_run_config(), instance=instance,
                                  asset_selection=[dg.AssetKey(a) for a in assets], raise_on_error=False)


def _failed_steps(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.step_key for e in result.all_events if e.is_step_failure]


def _verified_entries(uri: str, database: str = FAULTS_DATABASE) -> list[dict]:
    db = connect(uri)[database]
    entries = entries_for_partition(db, partition_window(KEY)[1])
    store = blob_store_for(get_settings())
    for entry in entries:  # every entry must point at the bytes it recorded
        read_verified(store, entry["file_name"], size_bytes=entry["size_bytes"], sha256=entry["sha256"])
    return entries


def test_each_asset_with_mongodb_stopped(fault_env, own_mongo) -> None:
    load_demo(connect(own_mongo.uri)[FAULTS_DATABASE], TINY_DEMO, end=partition_window(KEY)[1])
    with dg.instance_for_test() as instance:
        own_mongo.stop()
        result = _run(instance, READS_MONGO)
        assert not result.success and _failed_steps(result) == ["raw_repositories"]
        own_mongo.start()
        assert _run(instance, READS_MONGO).success  # the re-run reads the hour

        own_mongo.stop()  # the middle of the lineage does not need MongoDB
        assert _run(instance, NO_MONGO).success
        result = _run(instance, TRAINS)  # fails before training, not after
        assert not result.success and _failed_steps(result) == ["recvae_model"]
        assert not [e for e in result.all_events if "epoch 1:" in (e.message or "")]
        own_mongo.start()
        assert _run(instance, TRAINS).success

        own_mongo.stop()
        result = _run(instance, WRITES_MONGO)
        assert not result.success and _failed_steps(result) == ["model_registry_entry"]
        own_mongo.start()
        assert _verified_entries(own_mongo.uri) == []  # nothing half-written while it was down

        assert _run(instance, WRITES_MONGO).success
        entries = _verified_entries(own_mongo.uri)
        assert len(entries) == 1 and connect(own_mongo.uri)[FAULTS_DATABASE][MODELS].count_documents({}) == 1
