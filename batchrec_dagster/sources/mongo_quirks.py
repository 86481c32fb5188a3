"""What the MongoDB code does differently only because the embedded server (nx-27017) differs
from MongoDB. Domain modules (registry/models.py, collections.py, partition_reads.py) call these
helpers and otherwise read as plain MongoDB. Each helper is correct on a real MongoDB too; the
tests run against both when BATCHREC_TEST_MONGODB_URI names a real server.

Quirks of nx-27017 0.8.1 (each one reproduced when it was found):
1. `$max` over dates returns a string       -> newest_date() sorts and takes the first.
2. `$type: "date"` matches nothing           -> DATES_ONLY, a range over all dates, selects dates.
3. `find_one_and_update` drops `$setOnInsert` -> upsert_keeping() uses update_one + find_one.
4. a datetime `$set` on an existing document is stored as a string
                                             -> upsert_keeping() replaces the whole document.
5. equality on strings shaped like "2026-03-01-20:00" matches nothing
                                             -> PARTITION_FIELD: partitions are found by the
                                                data_end datetime, never by their key string.
6. `{"_id": {"$gt": ObjectId}}` matches nothing -> nothing pages by ObjectId; ranges use dates.
7. a range over dates also returns documents whose field is a string
                                             -> only_dates() keeps the documents that hold a date.
8. `{"a.b": {"$ne": x}}` does not match a document whose `a` is null, and `{"arr": {"$ne": x}}`
   matches an array that holds x       -> model_controls' state keeps the pin's id in a string
                                                field ("" for none) and the bans as `bans.<id>`
                                                keys tested with `$exists`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo.collection import Collection

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# (2) MongoDB compares within a type, so a range from the epoch selects exactly the date values
DATES_ONLY = {"$gte": EPOCH}
# (5) the field that identifies a partition in queries and unique indexes
PARTITION_FIELD = "data_end"


def newest_date(collection: Collection, field: str, query: Mapping[str, Any] | None = None
                ) -> datetime | None:
    """The largest date in `field` among the documents matching `query` (1, 2)."""
    cursor = (collection.find({**(query or {}), field: DATES_ONLY}, {field: 1})
              .sort([(field, pymongo.DESCENDING)]).limit(1))
    doc = next(iter(cursor), None)
    return doc[field] if doc else None


def upsert_keeping(collection: Collection, key: Mapping[str, Any], fields: Mapping[str, Any],
                   keep: Mapping[str, Any]) -> dict[str, Any]:
    """Insert `key + fields + keep`, or replace the existing document's fields while the values of
    `keep`'s fields stay as first stored (e.g. created_at). Returns the stored document (3, 4)."""
    existing = collection.find_one(dict(key), {name: 1 for name in keep})
    if existing is None:
        collection.update_one(dict(key), {"$set": dict(fields), "$setOnInsert": dict(keep)}, upsert=True)
    else:
        kept = {name: existing.get(name, value) for name, value in keep.items()}
        collection.replace_one(dict(key), {**key, **fields, **kept})
    return collection.find_one(dict(key))


def only_dates(docs: Iterable[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """The documents of a date-range query whose `field` is a date (7)."""
    return [doc for doc in docs if isinstance(doc.get(field), datetime)]
