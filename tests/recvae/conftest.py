"""Fixtures for the recvae tests: a small synthetic split and the real GitHub stars data."""

from __future__ import annotations

from pathlib import Path

import pytest

from recvae import Interactions, Split, split_users
from recvae.datasets import load_github_stars, power_law_interactions

GITHUB_STARS = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "github-stars-tiny"


@pytest.fixture(scope="session")
def small_inter() -> Interactions:
    return power_law_interactions(400, 150, 8000, seed=3)


@pytest.fixture(scope="session")
def small_split(small_inter: Interactions) -> Split:
    return split_users(small_inter, n_validation=60, n_test=60, seed=1)


@pytest.fixture(scope="session")
def github_stars() -> Interactions:
    if not (GITHUB_STARS / "stars.csv").is_file():
        pytest.skip(f"github-stars-tiny dataset not found at {GITHUB_STARS}")
    return load_github_stars(GITHUB_STARS)
