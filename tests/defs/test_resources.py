import dagster as dg
import pytest

from batchrec_dagster.defs.assets.config import SourceConfig, TrainingConfig
from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.defs.deployments import build_resources
from batchrec_dagster.defs.io_managers import MongoRegistryIOManager, TypedIOManager
from batchrec_dagster.defs.jobs import ASSET_NAMES
from batchrec_dagster.defs.partitions import hourly_partitions
from batchrec_dagster.defs.resources import GCSArtifactStore, LocalArtifactStore, RunDefaults
from batchrec_dagster.deployments import blob_store_for
from batchrec_dagster.settings import Settings, SettingsError, get_settings, load_settings

KEYS = {"mongo", "artifact_store", "io_manager", "registry_io_manager", "run_defaults"}


def test_local_resources_need_no_cloud(local_settings: Settings):
    resources = build_resources(local_settings)
    assert set(resources) == KEYS
    assert isinstance(resources["io_manager"], TypedIOManager)
    assert isinstance(resources["artifact_store"], LocalArtifactStore)
    assert isinstance(resources["registry_io_manager"], MongoRegistryIOManager)
    assert resources["artifact_store"].root == str(local_settings.home / "storage" / "models")
    # the asset values' store: the same resource type, in the folder the values have always had
    values = resources["io_manager"].store
    assert isinstance(values, LocalArtifactStore)
    assert values.root == str(local_settings.home / "storage" / "assets")


def test_prod_resources_read_secrets_from_the_environment(prod_env: str):
    """The code location's settings come from the environment: secrets and deployment values stay
    references to it (dg.EnvVar) until a run starts, never values in run config or the UI."""
    resources = build_resources(get_settings())
    assert isinstance(resources["io_manager"], TypedIOManager)
    assert isinstance(resources["artifact_store"], GCSArtifactStore)
    assert isinstance(resources["mongo"].uri, dg.EnvVar)
    assert resources["mongo"].uri.env_var_name == "MONGODB_URI"
    values = resources["io_manager"].store
    assert isinstance(values, GCSArtifactStore)
    for store in (resources["artifact_store"], values):
        assert isinstance(store.bucket, dg.EnvVar)
        assert store.bucket.get_value() == prod_env
        assert isinstance(store.gcs.project, dg.EnvVar)


def test_prod_resources_from_a_settings_object_carry_its_values(prod_settings: Settings,
                                                                prod_variables: dict[str, str]):
    resources = build_resources(prod_settings)
    assert resources["mongo"].uri == prod_settings.mongodb_uri
    assert resources["artifact_store"].bucket == prod_settings.gcs_bucket
    values = resources["io_manager"].store
    assert (values.bucket, values.prefix) == (prod_settings.gcs_bucket, f"{prod_settings.gcs_prefix}/assets")
    assert resources["mongo"].embedded_data_dir is None  # prod never starts the embedded server
    with pytest.raises(SettingsError, match="GCS_BUCKET"):
        load_settings({k: v for k, v in prod_variables.items() if k != "GCS_BUCKET"})


@pytest.mark.parametrize("deployment", ["local", "prod"])
def test_dagster_and_the_cli_use_the_same_store(deployment: str, local_settings: Settings,
                                                prod_settings: Settings):
    """One deployment table: the artifact store the resources give a run is the one the CLI and
    the server open (blob_store_for)."""
    settings = {"local": local_settings, "prod": prod_settings}[deployment]
    in_run = build_resources(settings)["artifact_store"].get_store()
    outside = blob_store_for(settings)
    assert (in_run.location, in_run.uri("m.pt")) == (outside.location, outside.uri("m.pt"))


def test_run_defaults_fill_only_what_the_run_config_leaves_unset():
    settings = load_settings({"BATCHREC_SOURCE_LAYOUT": "embedded", "BATCHREC_TRAINING_DEVICE": "cpu",
                              "BATCHREC_ANN_INDEX": "ivf"})
    defaults = RunDefaults.from_settings(settings)
    assert defaults.fill(SourceConfig()).layout == "embedded"
    assert defaults.fill(SourceConfig(layout="stars")).layout == "stars"
    training = defaults.fill(TrainingConfig(ann_recall_k=5))
    assert (training.device, training.ann_index, training.ann_recall_k) == ("cpu", "ivf", 5)
    assert training.ann_min_items == settings.ann_min_items


def test_assets_share_one_lineage_on_hourly_partitions():
    settings = load_settings({"BATCHREC_PARTITIONS_START": "2026-02-01-00:00"})
    graph = build_definitions(settings).resolve_asset_graph()
    lineage = [graph.get(dg.AssetKey(name)) for name in ASSET_NAMES]
    for asset in lineage:
        assert asset.partitions_def == hourly_partitions(settings)
        assert asset.partitions_def.get_first_partition_key() == "2026-02-01-00:00"
        assert asset.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
        assert asset.group_name == "recommender"
    assert graph.get(dg.AssetKey("recvae_model")).pools == {"training"}
    registry = build_definitions(settings).resolve_assets_def("model_registry_entry")
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
