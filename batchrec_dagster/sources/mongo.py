"""MongoDB connections, without Dagster: the pipeline's resource, the CLI and the server use these.

`MONGODB_URI` when it is set; in the `local` deployment without it, the embedded nx-27017 server
under BATCHREC_HOME, started on first use.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pymongo
from pymongo.database import Database

from batchrec_dagster.settings import Settings
from batchrec_dagster.sources.embedded_mongo import ensure_embedded_mongo

SERVER_SELECTION_TIMEOUT_MS = 10_000


def connect(uri: str, **kwargs: Any) -> pymongo.MongoClient:
    """Every client in the project: timezone-aware datetimes (UTC), bounded server selection:
    10 s, unless the URI sets `serverSelectionTimeoutMS` (pymongo lets a keyword override the URI,
    which would silently drop the operator's choice)."""
    if "serverselectiontimeoutms=" not in urlsplit(uri).query.lower():
        kwargs.setdefault("serverSelectionTimeoutMS", SERVER_SELECTION_TIMEOUT_MS)
    return pymongo.MongoClient(uri, tz_aware=True, **kwargs)


def server_uri(settings: Settings) -> str:
    """MONGODB_URI, or the embedded server's address (started if it is not running)."""
    if settings.mongodb_uri:
        return settings.mongodb_uri
    if settings.deployment == "prod":  # unreachable: Settings refuses prod without MONGODB_URI
        raise ValueError("the prod deployment needs MONGODB_URI")
    return ensure_embedded_mongo(settings.mongo_data_dir, settings.mongo_port)


def open_database(settings: Settings) -> Database:
    """The batchrec database of the deployment (the client lives as long as the process)."""
    return connect(server_uri(settings))[settings.mongodb_database]
