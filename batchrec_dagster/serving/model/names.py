"""Repository names for a model's columns: from the artifact (written by the pipeline), else looked
up once per load in MongoDB `repositories`; never per request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pymongo.database import Database

from batchrec_dagster.sources.collections import REPOSITORIES

LOOKUP_BATCH = 5000  # ids per `$in` query


def item_names(db: Database | None, item_ids: np.ndarray, extra: Mapping[str, Any]
               ) -> tuple[np.ndarray, str]:
    """An object array of `owner/name` (None where unknown) per column, and where the names came
    from: "artifact", "mongodb" or "none"."""
    names = np.full(len(item_ids), None, dtype=object)
    from_artifact = extra.get("item_names")
    if isinstance(from_artifact, list) and len(from_artifact) == len(item_ids):
        names[:] = [n if isinstance(n, str) else None for n in from_artifact]
        return names, "artifact"
    if db is None or item_ids.dtype.kind != "i":
        return names, "none"
    # older artifacts carry no names
    column = {int(i): c for c, i in enumerate(item_ids.tolist())}
    found = 0
    ids = list(column)
    for start in range(0, len(ids), LOOKUP_BATCH):
        for doc in db[REPOSITORIES].find({"_id": {"$in": ids[start:start + LOOKUP_BATCH]}},
                                         {"_id": 1, "full_name": 1}):
            c = column.get(doc.get("_id"))
            if c is not None and isinstance(doc.get("full_name"), str):
                names[c] = doc["full_name"]
                found += 1
    return names, "mongodb" if found else "none"
