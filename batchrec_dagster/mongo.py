"""The MongoDB resource: pymongo against MONGODB_URI, or the embedded server when it is unset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pymongo
from pydantic import PrivateAttr
from pymongo.database import Database

from batchrec_dagster.embedded_mongo import ensure_embedded_mongo
from batchrec_dagster.settings import load_settings


def connect(uri: str, **kwargs: Any) -> pymongo.MongoClient:
    """Every client in the project: timezone-aware datetimes (UTC), bounded server selection."""
    kwargs.setdefault("serverSelectionTimeoutMS", 10_000)
    return pymongo.MongoClient(uri, tz_aware=True, **kwargs)


class MongoResource(dg.ConfigurableResource):
    """A pymongo database handle. With no `uri`, an embedded nx-27017 server is started on demand."""

    uri: str | None = None
    database: str = "batchrec"
    embedded_data_dir: str | None = None
    embedded_port: int = 27117

    _client: pymongo.MongoClient | None = PrivateAttr(default=None)

    def resolved_uri(self) -> str:
        if self.uri:
            return self.uri
        data_dir = Path(self.embedded_data_dir or load_settings().mongo_data_dir)
        return ensure_embedded_mongo(data_dir, self.embedded_port)

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
