"""The Dagster resources of batchrec (defs/deployments.py builds them from the deployment table).

- MongoResource: a database handle on MONGODB_URI, or on the embedded server in `local`.
- ArtifactStoreResource: a BlobStore in a local folder or a GCS bucket: the write-once model
  artifacts, and (nested in defs/io_managers.py's TypedIOManager) the stored asset values.
- RunDefaults: the settings that are defaults of run config, for the assets, checks and ops, and
  the registry's selection policy.
"""

from __future__ import annotations

from typing import Any, TypeVar

import dagster as dg
import pymongo
from dagster_gcp import GCSResource
from pydantic import PrivateAttr
from pymongo.database import Database

from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.settings import Settings
from batchrec_dagster.sources.mongo import MongoAddress, connect
from batchrec_dagster.storage.blobs import BlobStore, GCSBlobStore, LocalBlobStore


class MongoResource(dg.ConfigurableResource):
    """A pymongo database handle. With no `uri`, the embedded nx-27017 server is started on demand."""

    uri: str | None = None
    database: str = "batchrec"
    embedded_data_dir: str | None = None
    embedded_port: int = 27117

    _client: pymongo.MongoClient | None = PrivateAttr(default=None)

    def resolved_uri(self) -> str:
        address = MongoAddress(self.uri, self.database, self.embedded_data_dir, self.embedded_port)
        return address.resolved_uri()

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
    """A folder of blobs; `get_store()` yields it as a BlobStore. Where `recvae_model` writes its
    artifacts (with `put_new`: write-once), and, as TypedIOManager's `store`, where asset values go."""

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

    # one client for the resource's life: the IO manager asks for the store at every load and store
    _client: Any = PrivateAttr(default=None)

    def get_store(self) -> BlobStore:
        if self._client is None:
            self._client = self.gcs.get_client()
        return GCSBlobStore(self._client, self.bucket, prefix=self.prefix)


ConfigT = TypeVar("ConfigT", bound=dg.Config)


class RunDefaults(dg.ConfigurableResource):
    """The settings that run config falls back to (docs/settings.md), given to the steps as a
    resource so that nothing reads the settings at import. A config class names them in
    `SETTINGS_DEFAULTS` (its field -> the setting of that name here); `fill` resolves the fields
    that the run config left None."""

    source_layout: str
    full_run_hour: int
    training_device: str | None = None
    ann_min_items: int
    ann_index_kind: str
    ann_recall_k: int
    ann_min_recall: float
    ann_ef_search: int
    ann_nprobe: int
    min_matrix_users: int
    min_matrix_items: int
    max_matrix_items: int
    max_matrix_density: float
    min_score_margin: float
    retention_reports_only: bool
    retention_min_age_hours: float
    model_max_age_hours: float
    score_tie_tolerance: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RunDefaults:
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})

    def selection_policy(self) -> SelectionPolicy:
        """The registry's policy (BATCHREC_MODEL_MAX_AGE_HOURS, BATCHREC_SCORE_TIE_TOLERANCE)."""
        return SelectionPolicy.of(self.model_max_age_hours, self.score_tie_tolerance)

    def fill(self, config: ConfigT) -> ConfigT:
        """`config` with each of its SETTINGS_DEFAULTS fields that is None set from the settings."""
        mapping: dict[str, str] = getattr(type(config), "SETTINGS_DEFAULTS", {})
        return config.model_copy(update={field: getattr(self, setting) for field, setting in mapping.items()
                                         if getattr(config, field) is None})
