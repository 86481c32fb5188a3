"""The Dagster resources of a deployment, built from its row of the deployment table
(batchrec_dagster/deployments.py), the table the CLI and the server read too.

Resource keys (the assets, checks and sensors rely on them):
- "mongo": MongoResource (MONGODB_URI, or the embedded server when it is unset in `local`).
- "artifact_store": write-once model artifacts; a local folder or a GCS bucket.
- "io_manager": the typed (npz + JSON) store of the first four assets (TypedIOManager), in a
  store of the artifact store type with a folder of its own (ASSETS_FOLDER): local folder or GCS.
- "registry_io_manager": `model_registry_entry` documents in MongoDB.
- "run_defaults": the settings that run config falls back to (RunDefaults).
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_gcp import GCSResource

from batchrec_dagster.defs.io_managers import MongoRegistryIOManager, TypedIOManager
from batchrec_dagster.defs.resources import (
    ArtifactStoreResource,
    GCSArtifactStore,
    LocalArtifactStore,
    MongoResource,
    RunDefaults,
)
from batchrec_dagster.deployments import deployment_of
from batchrec_dagster.settings import Settings
from batchrec_dagster.storage.blobs import ARTIFACTS_FOLDER, ASSETS_FOLDER


def _secret(settings: Settings, name: str, value: str | None) -> Any:
    """dg.EnvVar when the settings came from the environment: Dagster then reads the value (it may
    hold a password) at run time and never writes it into run config or the UI. Settings given as
    an object (tests) carry the value itself, which the run uses."""
    if not value:
        return None
    return dg.EnvVar(name) if settings.read_from_environment else value


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources of the deployment in `settings`."""
    deployment = deployment_of(settings)
    address = deployment.mongo(settings)
    mongo = MongoResource(uri=_secret(settings, "MONGODB_URI", address.uri), database=address.database,
                          embedded_data_dir=address.embedded_data_dir, embedded_port=address.embedded_port)
    artifacts = deployment.store(settings, ARTIFACTS_FOLDER)
    values = deployment.store(settings, ASSETS_FOLDER)
    if deployment.store_kind == "gcs":
        gcs = GCSResource(project=_secret(settings, "GOOGLE_CLOUD_PROJECT", settings.google_cloud_project))
        bucket = _secret(settings, "GCS_BUCKET", artifacts.root)
        artifact_store: ArtifactStoreResource = GCSArtifactStore(gcs=gcs, bucket=bucket,
                                                                 prefix=artifacts.prefix)
        value_store: ArtifactStoreResource = GCSArtifactStore(gcs=gcs, bucket=bucket, prefix=values.prefix)
    else:
        artifact_store = LocalArtifactStore(root=artifacts.root)
        value_store = LocalArtifactStore(root=values.root)
    return {
        "mongo": mongo,
        "artifact_store": artifact_store,
        "io_manager": TypedIOManager(store=value_store),
        "registry_io_manager": MongoRegistryIOManager(mongo=mongo),
        "run_defaults": RunDefaults.from_settings(settings),
    }
