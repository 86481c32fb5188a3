"""Fixtures of the pipeline tests: a deployment's environment pointed at the test servers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batchrec_dagster.defs.partitions import KST
from batchrec_dagster.settings import Settings, get_settings, load_settings
from batchrec_dagster.sources.demo_data import DemoSpec

# Small enough to train in seconds on 2 shared cores, structured enough that RecVAE beats popularity.
# (NDCG@100 needs a catalogue well over 100 repositories to mean anything.)
TINY_DEMO = DemoSpec(users=300, repos=300, topics=8, mean_stars_per_user=15, days=3, seed=7)
TINY_TRAINING: dict[str, Any] = {"epochs": 6, "hidden_dim": 128, "latent_dim": 32, "batch_size": 100,
                                 "learning_rate": 2e-3, "time_budget_s": 60.0, "patience": None}
TINY_SPLIT: dict[str, Any] = {"validation_users": 60}


def distant_full_run_hour() -> str:
    """A BATCHREC_FULL_RUN_HOUR twelve hours from the current KST hour. The tests materialize the
    last few closed hours; when one of them is the daily full run, its read and training are full
    whatever the test set up, so a test that expects "no snapshot" or a warm hour would fail at one
    time of day (it did: test_demo_then_registry_and_recommend between 20:00 and 21:00 UTC)."""
    return str((datetime.now(UTC).astimezone(KST).hour + 12) % 24)


def tiny_run_config(**training: Any) -> dict[str, Any]:
    from batchrec_dagster.cli.materialize import training_run_config

    return training_run_config({**TINY_TRAINING, **training}, extra={"vae_input": TINY_SPLIT},
                               log_level="WARNING")


@pytest.fixture
def local_variables(tmp_path: Path, mongo_server_uri: str, mongo_db: Any) -> dict[str, str]:
    """The local deployment with BATCHREC_HOME in tmp_path and the test MongoDB/database."""
    return {"BATCHREC_DEPLOYMENT": "local", "BATCHREC_HOME": str(tmp_path / "home"),
            "MONGODB_URI": mongo_server_uri, "MONGODB_DATABASE": mongo_db.name,
            "BATCHREC_FULL_RUN_HOUR": distant_full_run_hour()}


@pytest.fixture
def prod_variables(local_variables: dict[str, str], gcs_bucket: str) -> dict[str, str]:
    """The prod deployment against the GCS emulator (anonymous credentials) and the test MongoDB."""
    return {**local_variables, "BATCHREC_DEPLOYMENT": "prod", "GCS_BUCKET": gcs_bucket,
            "GOOGLE_CLOUD_PROJECT": "batchrec-test"}


@pytest.fixture
def local_settings(local_variables: dict[str, str]) -> Settings:
    """The local deployment's settings, as an object: what build_definitions and materialize take."""
    return load_settings(local_variables)


@pytest.fixture
def prod_settings(prod_variables: dict[str, str]) -> Settings:
    return load_settings(prod_variables)


@contextmanager
def environment(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> Iterator[None]:
    """`variables` as this process's environment, for code whose interface is the environment: the
    CLI's commands, run in-process, read the settings there once (get_settings), so the cache is
    cleared when the variables are set and again when they are undone."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    for name in ("BATCHREC_SOURCE_LAYOUT", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, local_variables: dict[str, str]) -> Iterator[Path]:
    """The local deployment in the environment (CLI tests); BATCHREC_HOME."""
    with environment(monkeypatch, local_variables):
        yield Path(local_variables["BATCHREC_HOME"])


@pytest.fixture
def prod_env(monkeypatch: pytest.MonkeyPatch, prod_variables: dict[str, str]) -> Iterator[str]:
    """The prod deployment in the environment (CLI tests); the bucket."""
    with environment(monkeypatch, prod_variables):
        yield prod_variables["GCS_BUCKET"]
