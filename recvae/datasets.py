"""Dataset readers and generators used by tests and benchmarks (no network, no copies)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recvae.data import Interactions, build_interactions


def load_github_stars(directory: str | Path) -> Interactions:
    """Read `stars.csv` (user,project,has_star) from the github-stars datasets; rows with
    has_star != 1 are ignored."""
    table = np.loadtxt(Path(directory) / "stars.csv", delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    starred = table[:, 2] == 1
    return build_interactions(table[starred, 0], table[starred, 1])


def power_law_interactions(
    n_users: int,
    n_items: int,
    n_interactions: int,
    *,
    exponent: float = 1.0,
    seed: int = 0,
) -> Interactions:
    """Random binary matrix with Zipf-like item popularity (p_i ~ 1 / (i + 10)^exponent) and
    log-normal user activity, with exactly `n_interactions` unique pairs; deterministic by seed.
    Users or items that were never drawn are absent, so the shape can be a little smaller."""
    rng = np.random.default_rng(seed)
    item_p = 1.0 / (np.arange(n_items) + 10.0) ** exponent
    item_p /= item_p.sum()
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    user_p = activity / activity.sum()
    if n_interactions > n_users * n_items:
        raise ValueError("more interactions requested than the matrix has cells")
    # Oversample to make up for duplicate pairs removed by de-duplication; draw again while short.
    draws = int(n_interactions * 1.15)
    users = rng.choice(n_users, size=draws, p=user_p)
    items = rng.choice(n_items, size=draws, p=item_p)
    inter = build_interactions(users, items)
    while inter.matrix.nnz < n_interactions:
        users = np.concatenate([users, rng.choice(n_users, size=draws, p=user_p)])
        items = np.concatenate([items, rng.choice(n_items, size=draws, p=item_p)])
        inter = build_interactions(users, items)
    if inter.matrix.nnz > n_interactions:
        keep = np.sort(rng.choice(inter.matrix.nnz, size=n_interactions, replace=False))
        rows = np.repeat(np.arange(inter.n_users), np.diff(inter.matrix.indptr))[keep]
        cols = inter.matrix.indices[keep]
        inter = build_interactions(inter.user_ids[rows], inter.item_ids[cols])
    return inter
