"""MongoDB connections, without Dagster: the pipeline's resource, the CLI and the server use these
(each deployment's address comes from the table in batchrec_dagster/deployments.py).

`MONGODB_URI` when it is set; in the `local` deployment without it, the embedded nx-27017 server
under BATCHREC_HOME, started on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pymongo

from batchrec_dagster.sources.embedded_mongo import ensure_embedded_mongo

SERVER_SELECTION_TIMEOUT_MS = 10_000


def connect(uri: str, **kwargs: Any) -> pymongo.MongoClient:
    """Every client in the project: timezone-aware datetimes (UTC), bounded server selection:
    10 s, unless the URI sets `serverSelectionTimeoutMS` (pymongo lets a keyword override the URI,
    which would silently drop the operator's choice)."""
    if "serverselectiontimeoutms=" not in urlsplit(uri).query.lower():
        kwargs.setdefault("serverSelectionTimeoutMS", SERVER_SELECTION_TIMEOUT_MS)
    return pymongo.MongoClient(uri, tz_aware=True, **kwargs)


@dataclass(frozen=True)
class MongoAddress:
    """A deployment's MongoDB: its URI, or the embedded server's data folder and port."""

    uri: str | None
    database: str
    embedded_data_dir: str | None = None
    embedded_port: int = 27117

    def resolved_uri(self) -> str:
        """The URI; the embedded server's, started if it is not running, when there is none."""
        if self.uri:
            return self.uri
        if not self.embedded_data_dir:
            raise ValueError("no MONGODB_URI, and this deployment has no embedded MongoDB")
        return ensure_embedded_mongo(Path(self.embedded_data_dir), self.embedded_port)
