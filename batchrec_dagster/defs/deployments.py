"""The resources of each deployment, chosen in one place (`BATCHREC_DEPLOYMENT`, settings.py).

Resource keys (the assets, checks and sensors rely on them):
- "mongo": MongoResource (MONGODB_URI, or the embedded server when it is unset in `local`).
- "artifact_store": write-once model artifacts; a local folder or a GCS bucket.
- "io_manager": the typed (npz + JSON) store of the first four assets; local folder or GCS.
- "registry_io_manager": `model_registry_entry` documents in MongoDB.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_gcp import GCSResource

from batchrec_dagster.defs.io_managers import GCSTypedIOManager, LocalTypedIOManager, MongoRegistryIOManager
from batchrec_dagster.defs.resources import (
    ArtifactStoreResource,
    GCSArtifactStore,
    LocalArtifactStore,
    MongoResource,
)
from batchrec_dagster.settings import Settings, get_settings
from batchrec_dagster.storage.blobs import ARTIFACTS_FOLDER, ASSETS_FOLDER


def _secret(name: str, value: str | None) -> Any:
    """dg.EnvVar when the setting is set: Dagster then reads the value (it may hold a password) at
    run time and never writes it into run config or the UI."""
    return dg.EnvVar(name) if value else None


def artifact_store_kind(settings: Settings | None = None) -> str:
    """The Dagit kind of the deployment's artifact store: a GCS bucket, or a local folder."""
    return "gcs" if (settings or get_settings()).deployment == "prod" else "filesystem"


def build_resources(settings: Settings | None = None) -> dict[str, Any]:
    """The resources of the deployment in `settings` (default: this process's settings)."""
    settings = settings or get_settings()
    mongo = MongoResource(
        uri=_secret("MONGODB_URI", settings.mongodb_uri),
        database=settings.mongodb_database,
        embedded_data_dir=str(settings.mongo_data_dir),
        embedded_port=settings.mongo_port,
    )
    if settings.deployment == "prod":
        gcs = GCSResource(project=_secret("GOOGLE_CLOUD_PROJECT", settings.google_cloud_project))
        bucket = dg.EnvVar("GCS_BUCKET")
        artifact_store: ArtifactStoreResource = GCSArtifactStore(
            gcs=gcs, bucket=bucket, prefix=f"{settings.gcs_prefix}/{ARTIFACTS_FOLDER}")
        io_manager: dg.ConfigurableIOManager = GCSTypedIOManager(
            gcs=gcs, bucket=bucket, prefix=f"{settings.gcs_prefix}/{ASSETS_FOLDER}")
    else:
        artifact_store = LocalArtifactStore(root=str(settings.artifacts_dir / ARTIFACTS_FOLDER))
        io_manager = LocalTypedIOManager(base_dir=str(settings.artifacts_dir / ASSETS_FOLDER))
    return {
        "mongo": mongo,
        "artifact_store": artifact_store,
        "io_manager": io_manager,
        "registry_io_manager": MongoRegistryIOManager(mongo=mongo),
    }
