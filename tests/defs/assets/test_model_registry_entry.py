"""The registry side of the pipeline: the Mongo IO manager, artifact names, the freshness edges of
the served model."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from batchrec_dagster.defs.assets.model_registry_entry import model_registry_entry as hourly_registry_entry
from batchrec_dagster.defs.assets.recvae_model import artifact_name, put_artifact
from batchrec_dagster.defs.deployments import build_resources
from batchrec_dagster.defs.io_managers import MongoRegistryIOManager
from batchrec_dagster.defs.partitions import hourly_partitions, partition_window
from batchrec_dagster.defs.resources import LocalArtifactStore, MongoResource, RunDefaults
from batchrec_dagster.registry import champions
from batchrec_dagster.registry.champions import champion_for_serving
from batchrec_dagster.registry.defaults import MAX_MODEL_AGE, SelectionPolicy
from batchrec_dagster.registry.models import MODELS, ensure_indexes, entries_for_partition, register_model
from batchrec_dagster.settings import load_settings
from batchrec_dagster.storage.blobs import BlobExistsError, LocalBlobStore
from batchrec_dagster.storage.values import TrainedModel

KEY = "2026-03-01-20:00"
START, END = partition_window(KEY)


def entry(run_id: str, score: float = 0.3, **fields) -> dict:
    return {"run_id": run_id, "partition_key": KEY, "model_kind": "recvae", "score": score,
            "file_name": f"recvae_{score:.4f}_{run_id}.pt", "bucket": "b", "uri": f"gs://b/{run_id}.pt",
            "sha256": "a" * 64, "size_bytes": 1, "data_start": START, "data_end": END,
            "metrics": {"ndcg@100": score}, **fields}


@pytest.fixture
def io_manager(mongo_server_uri, mongo_db):
    return MongoRegistryIOManager(mongo=MongoResource(uri=mongo_server_uri, database=mongo_db.name))


def output_context(run_id: str) -> dg.OutputContext:
    return dg.build_output_context(asset_key="model_registry_entry", partition_key=KEY, run_id=run_id)


def test_writing_the_entry_twice_in_one_run_keeps_one_document(io_manager, mongo_db):
    io_manager.handle_output(output_context("run-1"), entry("run-1", 0.3))
    io_manager.handle_output(output_context("run-1"), entry("run-1", 0.3))
    assert mongo_db[MODELS].count_documents({}) == 1
    io_manager.handle_output(output_context("run-2"), entry("run-2", 0.2))
    assert mongo_db[MODELS].count_documents({}) == 2
    again = mongo_db[MODELS].find_one({"run_id": "run-1"})
    assert isinstance(again["data_end"], datetime) and isinstance(again["data_start"], datetime)
    context = dg.build_input_context(asset_key="model_registry_entry", partition_key=KEY)
    loaded = io_manager.load_input(context)
    assert loaded["run_id"] == "run-2"  # the newest entry of the partition


def test_registry_output_metadata_names_the_document(io_manager, mongo_db):
    context = output_context("run-1")
    io_manager.handle_output(context, entry("run-1"))
    stored = mongo_db[MODELS].find_one({"run_id": "run-1"})
    metadata = context.get_logged_metadata()
    assert metadata["registry_id"].value == str(stored["_id"])
    assert metadata["registry_filter"].value == {"run_id": "run-1", "data_end": END.isoformat()}
    assert "selected_for_serving" not in metadata  # the IO manager stores; the asset decides
    assert champions.current_champion(mongo_db) is None


def trained(store: LocalBlobStore, name: str, score: float) -> TrainedModel:
    """What recvae_model hands on: an artifact in the store (its bytes do not matter here, only that
    they are the recorded ones) and its scores."""
    blob = store.put_new(name, name.encode())
    return TrainedModel(file_name=blob.name, bucket=store.location, uri=blob.uri, sha256=blob.sha256,
                        size_bytes=blob.size_bytes, score=score, metrics={"ndcg@100": score},
                        popularity_metrics={}, config={}, history=[], data_sizes={}, training_seconds=1.0,
                        epochs=1)


def register(model: TrainedModel, partition_key: str, resources: dict,
             model_registry_entry: dg.AssetsDefinition) -> dict:
    """Materialize model_registry_entry of `model` (a stand-in recvae_model asset hands it on), with
    the real registry IO manager; returns the decision the asset observed after registering."""
    @dg.asset(name="recvae_model", partitions_def=model_registry_entry.partitions_def,
              backfill_policy=model_registry_entry.backfill_policy)
    def given_model() -> TrainedModel:
        return model

    result = dg.materialize([given_model, model_registry_entry], partition_key=partition_key,
                            resources=resources)
    [observation] = [e.asset_observation_data.asset_observation for e in result.all_events
                     if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
    return {key: value.value for key, value in observation.metadata.items()}


def test_the_asset_decides_the_champion_after_its_entry_is_stored(mongo_server_uri, mongo_db, tmp_path,
                                                                  local_settings):
    model_registry_entry = hourly_registry_entry.build(hourly_partitions(local_settings))
    store = LocalBlobStore(tmp_path / "artifacts")
    mongo = MongoResource(uri=mongo_server_uri, database=mongo_db.name)
    resources = {"mongo": mongo, "registry_io_manager": MongoRegistryIOManager(mongo=mongo),
                 "artifact_store": LocalArtifactStore(root=str(store.root)),
                 "run_defaults": RunDefaults.from_settings(local_settings)}
    key = model_registry_entry.partitions_def.get_last_partition_key()  # the newest hour: fresh data
    # a first model serves at once: the decision saw the entry the IO manager had just stored
    first = register(trained(store, "first.pt", 0.2), key, resources, model_registry_entry)
    [entry] = entries_for_partition(mongo_db, partition_window(key)[1])
    assert first["selected_for_serving"] is True and first["champion"] == str(entry["_id"])
    assert champions.current_champion(mongo_db)["model_id"] == str(entry["_id"])
    # a valid champion is only replaced on comparable scores, never by a higher own score
    second = register(trained(store, "second.pt", 0.9), key, resources, model_registry_entry)
    assert second["selected_for_serving"] is False and second["champion"] == str(entry["_id"])
    assert "no comparable scores" in second["champion_reason"]
    assert len(entries_for_partition(mongo_db, partition_window(key)[1])) == 2


def test_the_settings_maximum_age_reaches_the_decision(mongo_db, local_variables):
    """BATCHREC_MODEL_MAX_AGE_HOURS in the Settings object that builds the resources (as
    build_definitions does) is the maximum age the asset decides by: a model three hours old, which
    the default 24 h would serve, is stale under 2 h."""
    settings = load_settings({**local_variables, "BATCHREC_MODEL_MAX_AGE_HOURS": "2"})
    model_registry_entry = hourly_registry_entry.build(hourly_partitions(settings))
    resources = build_resources(settings)
    store = resources["artifact_store"].get_store()
    keys = model_registry_entry.partitions_def.get_partition_keys()
    old_key = keys[-3]  # its data ended 2 h before the newest hour's, which ended before now
    old = register(trained(store, "old.pt", 0.5), old_key, resources, model_registry_entry)
    [entry] = entries_for_partition(mongo_db, partition_window(old_key)[1])
    assert old["selected_for_serving"] is False and old["champion"] == "none"
    assert "no fresh" in old["champion_reason"]
    assert str(champion_for_serving(mongo_db, SelectionPolicy())["_id"]) == str(entry["_id"])  # 24 h would
    newest = register(trained(store, "newest.pt", 0.1), keys[-1], resources, model_registry_entry)
    assert newest["selected_for_serving"] is True


def test_freshness_edges_of_the_served_model(mongo_db):
    """champion_for_serving before any evaluation: the newest fresh model serves, whatever its own score."""
    ensure_indexes(mongo_db)
    now = END + MAX_MODEL_AGE

    def served(at: datetime) -> str | None:
        entry = champion_for_serving(mongo_db, SelectionPolicy(), at)
        return entry["run_id"] if entry else None

    register_model(mongo_db, entry("boundary", 0.2, created_at=now - timedelta(hours=2)))
    register_model(mongo_db, entry("other-kind", 0.9, model_kind="ease", created_at=now - timedelta(hours=1)))
    # data_end exactly max_age old still serves, a second later nothing does; another model kind never
    assert served(now) == "boundary"
    assert served(now + timedelta(seconds=1)) is None
    # a model on newer data takes over, though its own score is lower (own scores do not compare)
    register_model(mongo_db, {**entry("newer", 0.1, created_at=now), "data_end": END + timedelta(hours=1)})
    assert served(now) == "newer"


def test_artifact_names_carry_kind_and_score_and_never_overwrite(local_store):
    name = artifact_name(0.21543, KEY, "8b7ed3c6-09c9-40e4-aff7-7431bd9ed94e")
    assert name == "recvae_0.2154_2026-03-01-2000_8b7ed3c6.pt"
    first = put_artifact(local_store, b"one", 0.21543, KEY, "8b7ed3c6-0000")
    second = put_artifact(local_store, b"two", 0.21543, KEY, "8b7ed3c6-0000")  # a retried step
    assert first.name == name and second.name == "recvae_0.2154_2026-03-01-2000_8b7ed3c6_1.pt"
    assert local_store.read(first.name) == b"one" and local_store.read(second.name) == b"two"
    with pytest.raises(BlobExistsError):
        local_store.put_new(first.name, b"three")


def test_entries_are_utc():
    assert END.tzinfo is not None and END.utcoffset() == timedelta(0)
    assert END == datetime(2026, 3, 1, 12, tzinfo=UTC)
