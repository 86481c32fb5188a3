"""The Dagster resources of batchrec (which ones a deployment uses is decided in deployments.py).

- MongoResource: a database handle on MONGODB_URI, or on the embedded server in `local`.
- ArtifactStoreResource: write-once model artifacts in a local folder or a GCS bucket.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pymongo
from dagster_gcp import GCSResource
from pydantic import PrivateAttr
from pymongo.database import Database

from batchrec_dagster.sources.embedded_mongo import ensure_embedded_mongo
from batchrec_dagster.sources.mongo import connect
from batchrec_dagster.storage.blobs import BlobStore, GCSBlobStore, LocalBlobStore


class MongoResource(dg.ConfigurableResource):
    """A pymongo database handle. With no `uri`, the embedded nx-27017 server is started on demand."""

    uri: str | None = None
    database: str = "batchrec"
    embedded_data_dir: str | None = None
    embedded_port: int = 27117

    _client: pymongo.MongoClient | None = PrivateAttr(default=None)

    def resolved_uri(self) -> str:
        if self.uri:
            return self.uri
        if not self.embedded_data_dir:
            raise ValueError("MongoResource needs a uri or an embedded_data_dir")
        return ensure_embedded_mongo(Path(self.embedded_data_dir), self.embedded_port)

    def get_client(self) -> pymongo.MongoClient:
        if self._client is None:
            self._client = connect(self.resolved_uri())
        return self._client

    def get_database(self) -> Database:
        return self.get_client()[self.database]

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


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
