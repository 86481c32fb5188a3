"""Artifact faults in the pipeline: a store that cannot be written, and an artifact corrupted,
truncated or replaced between training and registration. Nothing unverified is ever registered."""

from __future__ import annotations

import shutil
import uuid

import dagster as dg
import pytest

from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.settings import get_settings
from batchrec_dagster.sources.demo_data import load_demo
from batchrec_dagster.sources.mongo import connect
from batchrec_dagster.storage.blobs import ARTIFACTS_FOLDER
from tests.harness.deployments import TINY_DEMO
from tests.harness.faults import FAULTS_DATABASE
from tests.sources.test_mongo_down import (
    KEY,
    NO_MONGO,
    READS_MONGO,
    TRAINS,
    WRITES_MONGO,
    _failed_steps,
    _run,
)
from tests.sources.test_mongo_down import _verified_entries as verified_entries

# fault injection on real servers: run alone with `pytest -m faults`
pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def trained(module_fault_env, module_mongo):
    """The hour read and trained (artifact written), not yet registered: once for the module, on
    the module's own MongoDB server and BATCHREC_HOME. Each case registers into a database of its
    own (`case_database`), so every case starts from this same state: trained, nothing registered."""
    get_settings.cache_clear()
    load_demo(connect(module_mongo.uri)[FAULTS_DATABASE], TINY_DEMO, end=partition_window(KEY)[1])
    with dg.instance_for_test() as instance:
        assert _run(instance, READS_MONGO + NO_MONGO + TRAINS).success
        models = module_fault_env / "storage" / ARTIFACTS_FOLDER
        [artifact] = [p for p in models.iterdir() if p.suffix == ".pt"]
        yield instance, artifact


@pytest.fixture
def case_database(trained, monkeypatch) -> str:
    """A fresh database for this case's registry: registration needs no stars, only the artifact
    and the trained run's stored values, which the cases share."""
    name = f"faults_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("MONGODB_DATABASE", name)
    get_settings.cache_clear()
    return name


@pytest.mark.parametrize("fault", ["truncated", "flipped", "replaced", "deleted"])
def test_a_damaged_artifact_is_never_registered(trained, case_database, module_mongo, fault) -> None:
    instance, artifact = trained
    data = artifact.read_bytes()
    try:
        if fault == "truncated":
            artifact.write_bytes(data[: len(data) // 2])
        elif fault == "flipped":
            artifact.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
        elif fault == "replaced":
            artifact.write_bytes(b"\x00" * len(data))  # same size, other bytes
        else:
            artifact.unlink()
        result = _run(instance, WRITES_MONGO)
        assert not result.success and _failed_steps(result) == ["model_registry_entry"]
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "refusing to register" in failure.event_specific_data.error.to_string()
        assert verified_entries(module_mongo.uri, case_database) == []
    finally:
        artifact.write_bytes(data)  # the original bytes back: the same run's output registers
    assert _run(instance, WRITES_MONGO).success
    assert len(verified_entries(module_mongo.uri, case_database)) == 1


def test_a_store_that_cannot_be_written_fails_before_training(fault_env, own_mongo) -> None:
    load_demo(connect(own_mongo.uri)[FAULTS_DATABASE], TINY_DEMO, end=partition_window(KEY)[1])
    models = fault_env / "storage" / ARTIFACTS_FOLDER
    models.parent.mkdir(parents=True, exist_ok=True)
    models.write_bytes(b"")  # a file where the folder should be: every write fails
    with dg.instance_for_test() as instance:
        result = _run(instance, READS_MONGO + NO_MONGO + TRAINS + WRITES_MONGO)
        assert not result.success and _failed_steps(result) == ["recvae_model"]
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "cannot write to the artifact store" in failure.event_specific_data.error.to_string()
        epochs = [e for e in result.all_events if "epoch 1:" in (e.message or "")]
        assert epochs == []  # it failed before the first epoch, not after training
        assert verified_entries(own_mongo.uri) == []

        models.unlink()
        shutil.rmtree(models, ignore_errors=True)
        assert _run(instance, READS_MONGO + NO_MONGO + TRAINS + WRITES_MONGO).success
        assert len(verified_entries(own_mongo.uri)) == 1
