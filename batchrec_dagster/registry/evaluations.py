"""The `evaluations` collection: comparable scores, one document per (model, evaluation window).

Written by the `model_evaluation` asset; read by champions.py (the promotion decision), the CLI
and Dagit's leaderboard. Every model scored on a window was scored on the same users and the same
held-out stars (those given during the window), none of which it trained on, so the scores of one
window compare; scores of different windows do not (docs/pipeline.md).

| field | |
|---|---|
| `model_id` | the `models` document's `_id`, as a string |
| `window_start`, `window_end` | the evaluation window (UTC dates; `window_end` identifies it) |
| `window_partition_key` | the window's partition key (display only) |
| `model_partition_key`, `model_data_end` | the model's own partition (display, age) |
| `score` | NDCG@100 on the window (null when `problem` is set) |
| `metrics` | `ndcg@20/50/100`, `recall@20/50/100`, `users` |
| `targets`, `unknown_targets` | held-out stars, and how many name repositories the model does not know |
| `problem` | why the model could not be scored (e.g. its artifact failed verification) |
| `run_id`, `evaluated_at`, `first_evaluated_at` | the evaluation run; a re-run replaces the scores |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo.database import Database

from batchrec_dagster.sources.mongo_quirks import newest_date, upsert_keeping

EVALUATIONS = "evaluations"


def ensure_indexes(db: Database) -> None:
    evaluations = db[EVALUATIONS]
    evaluations.create_index([("model_id", pymongo.ASCENDING), ("window_end", pymongo.ASCENDING)],
                             unique=True, name="model_window_unique")
    evaluations.create_index([("window_end", pymongo.DESCENDING)], name="window_end")


def record_evaluation(db: Database, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """Insert or replace the scores of one model on one window (a re-run replaces them)."""
    for field in ("model_id", "window_start", "window_end"):
        if evaluation.get(field) is None:
            raise ValueError(f"an evaluation needs {field}")
    window_end = evaluation["window_end"]
    if not isinstance(window_end, datetime) or window_end.tzinfo is None:
        raise ValueError("window_end must be a timezone-aware datetime")
    key = {"model_id": str(evaluation["model_id"]), "window_end": window_end}
    fields = {k: v for k, v in evaluation.items() if k not in ("_id", *key)}
    fields.setdefault("evaluated_at", datetime.now(UTC))
    return upsert_keeping(db[EVALUATIONS], key, fields, keep={"first_evaluated_at": fields["evaluated_at"]})


def on_window(db: Database, window_end: datetime) -> dict[str, dict[str, Any]]:
    """model_id -> its evaluation on the window ending at `window_end`."""
    return {doc["model_id"]: doc for doc in db[EVALUATIONS].find({"window_end": window_end})}


def newest_window_end(db: Database) -> datetime | None:
    """The end of the newest window anything was evaluated on."""
    value = newest_date(db[EVALUATIONS], "window_end")
    return value.astimezone(UTC) if value else None


def latest_for_models(db: Database, model_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """model_id -> its evaluation on the newest window it was scored on (for listings)."""
    ids = sorted({str(i) for i in model_ids})
    latest: dict[str, dict[str, Any]] = {}
    if not ids:
        return latest
    for doc in db[EVALUATIONS].find({"model_id": {"$in": ids}}).sort([("window_end", pymongo.DESCENDING)]):
        latest.setdefault(doc["model_id"], doc)
    return latest


def history_of(db: Database, model_id: str, limit: int = 48) -> list[dict[str, Any]]:
    """One model's evaluations, newest window first (its comparable score over time)."""
    return list(db[EVALUATIONS].find({"model_id": str(model_id)})
                .sort([("window_end", pymongo.DESCENDING)]).limit(limit))
