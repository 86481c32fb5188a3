"""Fixtures of the pipeline tests: a deployment's environment pointed at the test servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchrec_dagster.settings import get_settings
from batchrec_dagster.sources.demo_data import DemoSpec

# Small enough to train in seconds on 2 shared cores, structured enough that RecVAE beats popularity.
# (NDCG@100 needs a catalogue well over 100 repositories to mean anything.)
TINY_DEMO = DemoSpec(users=300, repos=300, topics=8, mean_stars_per_user=15, days=3, seed=7)
TINY_TRAINING: dict[str, Any] = {"epochs": 6, "hidden_dim": 128, "latent_dim": 32, "batch_size": 100,
                                 "learning_rate": 2e-3, "time_budget_s": 60.0, "patience": None}
TINY_SPLIT: dict[str, Any] = {"validation_users": 60}


def tiny_run_config(**training: Any) -> dict[str, Any]:
    from batchrec_dagster.cli.materialize import training_run_config

    return training_run_config({**TINY_TRAINING, **training}, extra={"vae_input": TINY_SPLIT},
                               log_level="WARNING")


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mongo_server_uri: str, mongo_db: Any) -> Path:
    """BATCHREC_DEPLOYMENT=local with BATCHREC_HOME in tmp_path and the test MongoDB/database."""
    home = tmp_path / "home"
    monkeypatch.setenv("BATCHREC_DEPLOYMENT", "local")
    monkeypatch.setenv("BATCHREC_HOME", str(home))
    monkeypatch.setenv("MONGODB_URI", mongo_server_uri)
    monkeypatch.setenv("MONGODB_DATABASE", mongo_db.name)
    monkeypatch.delenv("BATCHREC_SOURCE_LAYOUT", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    get_settings.cache_clear()
    return home


@pytest.fixture
def prod_env(local_env: Path, monkeypatch: pytest.MonkeyPatch, gcs_bucket: str) -> str:
    """BATCHREC_DEPLOYMENT=prod against the GCS emulator (anonymous credentials) and the test MongoDB."""
    monkeypatch.setenv("BATCHREC_DEPLOYMENT", "prod")
    monkeypatch.setenv("GCS_BUCKET", gcs_bucket)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "batchrec-test")
    get_settings.cache_clear()
    return gcs_bucket
