"""Each deployment in one table: where its MongoDB and its stores are.

`BATCHREC_DEPLOYMENT` names a row of `DEPLOYMENTS`. Dagster's resources (defs/deployments.py) and
the CLI and the server (`open_database`, `blob_store_for`) all read that row, so the pipeline and
the tools outside it always see the same database and the same objects. No Dagster here: the
serving package imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from google.cloud import storage as gcs
from pymongo.database import Database

from batchrec_dagster.settings import Settings
from batchrec_dagster.sources.mongo import MongoAddress, connect
from batchrec_dagster.storage.blobs import ARTIFACTS_FOLDER, BlobStore, GCSBlobStore, LocalBlobStore

StoreKind = Literal["filesystem", "gcs"]


@dataclass(frozen=True)
class StoreLocation:
    """Where one store's objects are: a local folder, or a prefix inside a GCS bucket."""

    kind: StoreKind  # also the Dagit kind of the assets that write there
    root: str  # the folder, or the bucket
    prefix: str = ""  # inside the bucket

    def open(self, project: str | None = None) -> BlobStore:
        if self.kind == "gcs":
            return GCSBlobStore(gcs.Client(project=project), self.root, prefix=self.prefix)
        return LocalBlobStore(self.root)


@dataclass(frozen=True)
class Deployment:
    """One row of the table: the kind of store, and whether MongoDB may be the embedded server."""

    name: str
    store_kind: StoreKind
    embedded_mongo: bool  # without MONGODB_URI: the embedded nx-27017 server under BATCHREC_HOME

    def store(self, settings: Settings, folder: str = ARTIFACTS_FOLDER) -> StoreLocation:
        """A folder of the deployment's storage (storage/blobs.py: ARTIFACTS_FOLDER, ASSETS_FOLDER)."""
        if self.store_kind == "gcs":
            return StoreLocation("gcs", settings.gcs_bucket or "", f"{settings.gcs_prefix}/{folder}")
        return StoreLocation("filesystem", str(settings.artifacts_dir / folder))

    def mongo(self, settings: Settings) -> MongoAddress:
        embedded = self.embedded_mongo and not settings.mongodb_uri
        return MongoAddress(uri=settings.mongodb_uri, database=settings.mongodb_database,
                            embedded_data_dir=str(settings.mongo_data_dir) if embedded else None,
                            embedded_port=settings.mongo_port)


DEPLOYMENTS: dict[str, Deployment] = {
    "local": Deployment("local", store_kind="filesystem", embedded_mongo=True),
    "prod": Deployment("prod", store_kind="gcs", embedded_mongo=False),
}


def deployment_of(settings: Settings) -> Deployment:
    return DEPLOYMENTS[settings.deployment]


def server_uri(settings: Settings) -> str:
    """MONGODB_URI, or the embedded server's address (started if it is not running)."""
    return deployment_of(settings).mongo(settings).resolved_uri()


def open_database(settings: Settings) -> Database:
    """The batchrec database of the deployment (the client lives as long as the process)."""
    return connect(server_uri(settings))[settings.mongodb_database]


def blob_store_for(settings: Settings, folder: str = ARTIFACTS_FOLDER) -> BlobStore:
    """The deployment's store outside Dagster (CLI, server): the objects the resources use."""
    return deployment_of(settings).store(settings, folder).open(settings.google_cloud_project)
