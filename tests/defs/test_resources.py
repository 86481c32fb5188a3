import dagster as dg
import pytest

from batchrec_dagster.defs.assets import ASSETS
from batchrec_dagster.defs.deployments import build_resources
from batchrec_dagster.defs.io_managers import GCSTypedIOManager, LocalTypedIOManager, MongoRegistryIOManager
from batchrec_dagster.defs.jobs import ASSET_NAMES
from batchrec_dagster.defs.partitions import hourly_partitions
from batchrec_dagster.defs.resources import GCSArtifactStore, LocalArtifactStore
from batchrec_dagster.settings import SettingsError, get_settings, load_settings

KEYS = {"mongo", "artifact_store", "io_manager", "registry_io_manager"}


def test_local_resources_need_no_cloud(local_env):
    resources = build_resources()
    assert set(resources) == KEYS
    assert isinstance(resources["io_manager"], LocalTypedIOManager)
    assert isinstance(resources["artifact_store"], LocalArtifactStore)
    assert isinstance(resources["registry_io_manager"], MongoRegistryIOManager)
    assert resources["artifact_store"].root == str(local_env.resolve() / "storage" / "models")


def test_prod_resources_read_the_environment(prod_env, monkeypatch):
    resources = build_resources()
    assert isinstance(resources["io_manager"], GCSTypedIOManager)
    assert isinstance(resources["artifact_store"], GCSArtifactStore)
    # secrets and deployment values stay environment references until a run starts
    assert isinstance(resources["mongo"].uri, dg.EnvVar)
    assert resources["mongo"].uri.env_var_name == "MONGODB_URI"
    assert isinstance(resources["artifact_store"].bucket, dg.EnvVar)
    assert resources["artifact_store"].bucket.get_value() == prod_env
    monkeypatch.delenv("GCS_BUCKET")
    get_settings.cache_clear()
    with pytest.raises(SettingsError, match="GCS_BUCKET"):
        build_resources()
    local = load_settings({"BATCHREC_DEPLOYMENT": "local", "BATCHREC_HOME": "/tmp/x"})
    assert isinstance(build_resources(local)["io_manager"], LocalTypedIOManager)


def test_assets_share_one_lineage_on_hourly_partitions():
    assert [a.key.to_user_string() for a in ASSETS] == list(ASSET_NAMES)
    for asset in ASSETS:
        assert asset.partitions_def == hourly_partitions
        assert asset.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
        assert asset.group_names_by_key[asset.key] == "recommender"
    training = next(a for a in ASSETS if a.key.to_user_string() == "recvae_model")
    assert training.op.pool == "training"
    registry = next(a for a in ASSETS if a.key.to_user_string() == "model_registry_entry")
    assert registry.get_io_manager_key_for_asset_key(registry.key) == "registry_io_manager"


def test_code_location_loads(local_env):
    from batchrec_dagster.defs.definitions import defs

    job = defs.resolve_job_def("hourly_training_job")
    assert {n.split(".")[0] for n in job.graph.node_dict} >= set(ASSET_NAMES)
    graph = defs.resolve_asset_graph()
    # Dagster's code_version on every asset; the freshness policy declared on the registry entry
    assert all(graph.get(dg.AssetKey(name)).code_version for name in ASSET_NAMES)
    assert graph.get(dg.AssetKey("model_registry_entry")).freshness_policy is not None
    assert graph.get(dg.AssetKey("recvae_model")).freshness_policy is None


def test_mongo_resource_starts_the_embedded_server_from_its_config(tmp_path):
    """The resource's config is plain strings (Dagster config): the data folder arrives as a str."""
    from batchrec_dagster.defs.resources import MongoResource
    from batchrec_dagster.sources.embedded_mongo import stop_embedded_mongo
    from tests.harness.servers import free_port

    data_dir = tmp_path / "mongo"
    resource = MongoResource(embedded_data_dir=str(data_dir), embedded_port=free_port(), database="x")
    try:
        db = resource.get_database()
        db["c"].insert_one({"_id": 1})
        assert db["c"].find_one({"_id": 1}) == {"_id": 1}
    finally:
        resource.get_client().close()
        assert stop_embedded_mongo(data_dir)
