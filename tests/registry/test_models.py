from datetime import UTC, datetime, timedelta

import pytest

from batchrec_dagster.registry.models import (
    MODELS,
    RegistryError,
    ensure_indexes,
    latest_entry,
    register_model,
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


def test_latest_entry_is_the_newest_registration_whatever_its_score(mongo_db):
    ensure_indexes(mongo_db)
    register_model(mongo_db, entry("old-best", 0.30, created_min=0))
    register_model(mongo_db, entry("worse", 0.10, created_min=50))
    register_model(mongo_db, {**entry("other-kind", 0.95, created_min=55), "model_kind": "ease"})
    assert latest_entry(mongo_db)["run_id"] == "worse"
    assert latest_entry(mongo_db, model_kind="ease")["run_id"] == "other-kind"


def test_bad_entries_are_rejected(mongo_db):
    with pytest.raises(RegistryError, match="sha256"):
        register_model(mongo_db, {**entry("r", 0.1), "sha256": None})
    with pytest.raises(RegistryError, match="timezone-aware"):
        register_model(mongo_db, {**entry("r", 0.1), "data_end": datetime(2026, 1, 1)})
    assert mongo_db[MODELS].count_documents({}) == 0
