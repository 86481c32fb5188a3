"""The model registry: one document per trained model in the MongoDB `models` collection.

Which model serves is decided by champions.py (`champion_for_serving`) on comparable scores: the
scores of every candidate on the same held-out window (evaluations.py, promotion.py). A model's
own `score` (NDCG@100 on its own partition's test users) is drawn on different users each hour
and is NOT comparable across models, so nothing here ranks models by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.database import Database

from batchrec_dagster.registry.defaults import MODEL_KIND
from batchrec_dagster.sources.mongo_quirks import PARTITION_FIELD, newest_date, only_dates, upsert_keeping

MODELS = "models"
REQUIRED_FIELDS = ("run_id", "partition_key", "model_kind", "score", "file_name", "bucket",
                   "sha256", "size_bytes", "data_end")


class RegistryError(ValueError):
    """A registry entry is missing fields or has ill-typed ones."""


def ensure_indexes(db: Database) -> None:
    models = db[MODELS]
    # one entry per (run, partition): re-writing it for the same run updates, never duplicates
    models.create_index([("run_id", pymongo.ASCENDING), (PARTITION_FIELD, pymongo.ASCENDING)],
                        unique=True, name="run_partition_unique")
    models.create_index([("data_end", pymongo.DESCENDING)], name="data_end")


def _validate(entry: Mapping[str, Any]) -> None:
    missing = [f for f in REQUIRED_FIELDS if entry.get(f) is None]
    if missing:
        raise RegistryError(f"registry entry lacks {', '.join(missing)}")
    if not isinstance(entry["score"], int | float):
        raise RegistryError(f"score must be a number, got {type(entry['score']).__name__}")
    for field in ("data_end", "created_at"):
        value = entry.get(field)
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise RegistryError(f"{field} must be a timezone-aware datetime")


def register_model(db: Database, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Insert the entry, or update the one already written by the same run for the same partition.

    Returns the stored document. `created_at` is set on first insert (UTC) unless given.
    """
    _validate(entry)
    fields = {k: v for k, v in entry.items() if k not in ("_id", "created_at")}
    key = {"run_id": entry["run_id"], PARTITION_FIELD: entry[PARTITION_FIELD]}
    return upsert_keeping(db[MODELS], key, fields,
                          keep={"created_at": entry.get("created_at") or datetime.now(UTC)})


def warm_start_candidates(db: Database, *, data_end_at_most: datetime, data_end_after: datetime,
                          model_kind: str = MODEL_KIND, limit: int = 3) -> list[dict[str, Any]]:
    """Models whose data ends in (data_end_after, data_end_at_most], newest data first (a tie: the
    newest registration): what a warm hourly run may start from (batchrec_dagster.training.start)."""
    cursor = (db[MODELS]
              .find({"model_kind": model_kind, "data_end": {"$gt": data_end_after, "$lte": data_end_at_most}})
              .sort([("data_end", pymongo.DESCENDING), ("created_at", pymongo.DESCENDING)]).limit(limit))
    return only_dates(cursor, "data_end")


def _object_id(model_id: Any) -> ObjectId | None:
    if not isinstance(model_id, ObjectId | str):
        return None
    try:
        return model_id if isinstance(model_id, ObjectId) else ObjectId(model_id.strip())
    except (InvalidId, TypeError):
        return None


def canonical_id(model_id: Any) -> str | None:
    """A model id as every comparison uses it: 24 lower-case hex digits (str(ObjectId)), or None
    when `model_id` is not an id. ObjectId parsing accepts upper case, so the pin, the bans and the
    champion record are all compared in this one form (issue 18, D4: a ban in upper case was
    listed but never applied)."""
    oid = _object_id(model_id)
    return str(oid) if oid is not None else None


def entry_by_id(db: Database, model_id: Any) -> dict[str, Any] | None:
    """The entry whose `_id` is `model_id` (an ObjectId or its 24-hex string), or None."""
    oid = _object_id(model_id)
    return db[MODELS].find_one({"_id": oid}) if oid is not None else None


def entries_by_ids(db: Database, model_ids: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """str(_id) -> entry, for the ids that exist."""
    oids = [oid for oid in map(_object_id, model_ids) if oid is not None]
    if not oids:
        return {}
    return {str(doc["_id"]): doc for doc in db[MODELS].find({"_id": {"$in": oids}})}


def entries_with_data_end(db: Database, *, since: datetime, until: datetime | None = None,
                          model_kind: str = MODEL_KIND, limit: int | None = None) -> list[dict[str, Any]]:
    """Models whose data_end is in [since, until] (until: no upper bound when None), newest data
    first, then newest registration: the fresh models (since = now - max_age), or the models a
    window can evaluate (until = the window's start: none of them saw a star of the window)."""
    bounds: dict[str, datetime] = {"$gte": since}
    if until is not None:
        bounds["$lte"] = until
    cursor = (db[MODELS].find({"model_kind": model_kind, "data_end": bounds})
              .sort([("data_end", pymongo.DESCENDING), ("created_at", pymongo.DESCENDING)]))
    if limit is not None:
        cursor = cursor.limit(limit)
    return only_dates(cursor, "data_end")


def entries_for_partition(db: Database, data_end: datetime) -> list[dict[str, Any]]:
    """Every model registered for the partition whose data window ends at `data_end`, oldest first."""
    return list(db[MODELS].find({PARTITION_FIELD: data_end}).sort([("created_at", pymongo.ASCENDING)]))


def entry_for_run(db: Database, run_id: str, data_end: datetime) -> dict[str, Any] | None:
    """The entry one run registered for the partition whose data window ends at `data_end`."""
    return db[MODELS].find_one({"run_id": run_id, PARTITION_FIELD: data_end})


def latest_entry(db: Database, *, model_kind: str = MODEL_KIND) -> dict[str, Any] | None:
    """The most recently registered model, fresh or not (for the freshness check and the CLI)."""
    cursor = (db[MODELS].find({"model_kind": model_kind})
              .sort([("created_at", pymongo.DESCENDING)]).limit(1))
    return next(iter(cursor), None)


def registered_until(db: Database, model_kind: str = MODEL_KIND) -> datetime | None:
    """The largest data_end in the registry: the newest data any registered model has seen.

    Not `latest_entry` (newest created_at): a backfill of an old hour registers late but sees old data.
    """
    value = newest_date(db[MODELS], "data_end", {"model_kind": model_kind})
    return value.astimezone(UTC) if value else None


def recent_entries(db: Database, limit: int) -> list[dict[str, Any]]:
    """The newest registrations first (for listings)."""
    return list(db[MODELS].find({}).sort([("created_at", pymongo.DESCENDING)]).limit(limit))


def referenced_files(db: Database, checkpoints_kept: int | None = None) -> set[str]:
    """Every artifact name any entry names (fresh, stale or malformed entries alike), and the
    files stored next to it: the top-k index (`ann_index.file_name`) and the training checkpoint
    (`training_checkpoint.file_name`). `checkpoints_kept`: only the checkpoints of that many newest
    entries (by data_end) count; None keeps every one. A warm run reads the checkpoint of the newest
    usable model only, and one that is gone makes that run start Adam afresh, not fail."""
    names: set[str] = set()
    checkpoints: list[tuple[datetime, str]] = []
    for doc in db[MODELS].find({}, {"file_name": 1, "ann_index": 1, "training_checkpoint": 1, "data_end": 1}):
        names.update(n for n in (_file_name(doc), _file_name(doc.get("ann_index"))) if n is not None)
        if (checkpoint := _file_name(doc.get("training_checkpoint"))) is not None:
            data_end = doc.get("data_end")
            checkpoints.append((_aware(data_end) if isinstance(data_end, datetime) else _NEVER, checkpoint))
    checkpoints.sort(reverse=True)
    names.update(name for _, name in checkpoints[:checkpoints_kept])
    return names


_NEVER = datetime.min.replace(tzinfo=UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _file_name(doc: object) -> str | None:
    """The `file_name` of an entry, or of a record stored beside its artifact (None if malformed)."""
    name = doc.get("file_name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else None


def registered_run_ids(db: Database) -> set[str]:
    """The run id of every entry (the runs whose stored recvae_model value retention keeps)."""
    return {doc["run_id"] for doc in db[MODELS].find({}, {"run_id": 1}) if isinstance(doc.get("run_id"), str)}
