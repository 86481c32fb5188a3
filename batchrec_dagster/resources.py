"""The resources of each deployment, chosen in one place (`BATCHREC_DEPLOYMENT`, settings.py).

Resource keys (the assets, checks and sensors rely on them):
- "mongo": MongoResource (MONGODB_URI, or the embedded server when it is unset in `local`).
- "artifact_store": write-once model artifacts; a local folder or a GCS bucket.
- "io_manager": the typed (npz + JSON) store of the first four assets; local folder or GCS.
- "registry_io_manager": `model_registry_entry` documents in MongoDB.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from dagster_gcp import GCSResource

from batchrec_dagster.io_managers import GCSTypedIOManager, LocalTypedIOManager, MongoRegistryIOManager
from batchrec_dagster.mongo import MongoResource
from batchrec_dagster.settings import Settings, load_settings
from batchrec_dagster.storage import BlobStore, GCSBlobStore, LocalBlobStore


class ArtifactStoreResource(dg.ConfigurableResource):
    """Where `recvae_model` writes artifacts; `get_store()` yields a write-once BlobStore."""

    def get_store(self) -> BlobStore:
        raise NotImplementedError


class LocalArtifactStore(ArtifactStoreResource):
    root: str

    def get_store(self) -> BlobStore:
        return LocalBlobStore(self.root)


class GCSArtifactStore(ArtifactStoreResource):
    gcs: GCSResource
    bucket: str
    prefix: str = "batchrec/models"

    def get_store(self) -> BlobStore:
        return GCSBlobStore(self.gcs.get_client(), self.bucket, prefix=self.prefix)


def _env_or(name: str, value: str | None) -> Any:
    """dg.EnvVar when the variable is set, so the value (it may hold a secret) is read at run time."""
    return dg.EnvVar(name) if os.environ.get(name) else value


def settings_for(deployment: str | None = None) -> Settings:
    if deployment is None:
        return load_settings()
    return load_settings({**os.environ, "BATCHREC_DEPLOYMENT": deployment})


def build_resources(deployment: str | None = None) -> dict[str, Any]:
    """The resources of `deployment` (default: BATCHREC_DEPLOYMENT, else `local`)."""
    settings = settings_for(deployment)
    mongo = MongoResource(
        uri=_env_or("MONGODB_URI", settings.mongodb_uri),
        database=settings.database,
        embedded_data_dir=str(settings.mongo_data_dir),
        embedded_port=settings.embedded_mongo_port,
    )
    if settings.deployment == "prod":
        project = os.environ.get("GOOGLE_CLOUD_PROJECT")
        gcs = GCSResource(project=dg.EnvVar("GOOGLE_CLOUD_PROJECT") if project else None)
        bucket = dg.EnvVar("GCS_BUCKET")
        artifact_store: ArtifactStoreResource = GCSArtifactStore(
            gcs=gcs, bucket=bucket, prefix=f"{settings.gcs_prefix}/models")
        io_manager: dg.ConfigurableIOManager = GCSTypedIOManager(
            gcs=gcs, bucket=bucket, prefix=f"{settings.gcs_prefix}/assets")
    else:
        artifact_store = LocalArtifactStore(root=str(settings.artifacts_dir / "models"))
        io_manager = LocalTypedIOManager(base_dir=str(settings.artifacts_dir / "assets"))
    return {
        "mongo": mongo,
        "artifact_store": artifact_store,
        "io_manager": io_manager,
        "registry_io_manager": MongoRegistryIOManager(mongo=mongo),
    }


def artifact_store_for(settings: Settings) -> BlobStore:
    """The artifact store outside Dagster (CLI, serving), identical to the resource's."""
    if settings.deployment == "prod":
        gcs = GCSResource(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
        return GCSBlobStore(gcs.get_client(), settings.gcs_bucket or "",
                            prefix=f"{settings.gcs_prefix}/models")
    return LocalBlobStore(settings.artifacts_dir / "models")
