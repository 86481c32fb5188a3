from datetime import UTC, datetime, timedelta

import pytest

from batchrec_dagster.registry.models import (
    MODELS,
    RegistryError,
    ensure_indexes,
    latest_entry,
    register_model,
    select_best,
    select_candidates,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def entry(run_id: str, score: float, *, data_age_h: float = 1, created_min: int = 0,
          partition_key: str = "2026-03-01-20:00") -> dict:
    return {
        "run_id": run_id, "partition_key": partition_key, "model_kind": "recvae",
        "score": score, "file_name": f"recvae_{score:.4f}_{run_id}.pt", "bucket": "b",
        "sha256": "0" * 64, "size_bytes": 10,
        "data_end": NOW - timedelta(hours=data_age_h),
        "created_at": NOW - timedelta(minutes=60 - created_min),
    }


def test_same_run_twice_is_one_entry(mongo_db):
    ensure_indexes(mongo_db)
    first = register_model(mongo_db, entry("r1", 0.2))
    second = register_model(mongo_db, {**entry("r1", 0.25), "created_at": None})
    assert mongo_db[MODELS].count_documents({}) == 1
    assert second["_id"] == first["_id"]
    assert second["score"] == 0.25
    assert second["created_at"] == first["created_at"]


def test_highest_score_wins_and_tie_goes_to_newest(mongo_db):
    ensure_indexes(mongo_db)
    register_model(mongo_db, entry("old-best", 0.30, created_min=0))
    register_model(mongo_db, entry("new-best", 0.30, created_min=30))
    register_model(mongo_db, entry("worse", 0.10, created_min=50))
    best = select_best(mongo_db, now=NOW)
    assert best["run_id"] == "new-best"
    assert latest_entry(mongo_db)["run_id"] == "worse"


def test_stale_models_are_not_candidates(mongo_db):
    ensure_indexes(mongo_db)
    register_model(mongo_db, entry("stale", 0.9, data_age_h=30))
    register_model(mongo_db, entry("fresh", 0.1, data_age_h=2))
    assert select_best(mongo_db, now=NOW)["run_id"] == "fresh"
    assert select_best(mongo_db, now=NOW, max_age=timedelta(hours=48))["run_id"] == "stale"
    assert select_best(mongo_db, now=NOW + timedelta(days=3)) is None


def test_bad_entries_are_rejected(mongo_db):
    with pytest.raises(RegistryError, match="sha256"):
        register_model(mongo_db, {**entry("r", 0.1), "sha256": None})
    with pytest.raises(RegistryError, match="timezone-aware"):
        register_model(mongo_db, {**entry("r", 0.1), "data_end": datetime(2026, 1, 1)})
    assert mongo_db[MODELS].count_documents({}) == 0


def test_candidates_follow_the_selection_rule(mongo_db):
    ensure_indexes(mongo_db)
    register_model(mongo_db, entry("mid", 0.20, created_min=0))
    register_model(mongo_db, entry("top-old", 0.30, created_min=10))
    register_model(mongo_db, entry("top-new", 0.30, created_min=40))
    register_model(mongo_db, entry("stale", 0.90, data_age_h=30))
    register_model(mongo_db, {**entry("other-kind", 0.95), "model_kind": "ease"})
    order = [e["run_id"] for e in select_candidates(mongo_db, now=NOW)]
    assert order == ["top-new", "top-old", "mid"]
    assert [e["run_id"] for e in select_candidates(mongo_db, now=NOW, limit=2)] == ["top-new", "top-old"]
    assert select_best(mongo_db, now=NOW)["run_id"] == order[0]
    assert select_candidates(mongo_db, now=NOW + timedelta(days=3)) == []
    with pytest.raises(ValueError, match="limit"):
        select_candidates(mongo_db, now=NOW, limit=0)
