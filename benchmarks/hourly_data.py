"""Data for bench_hourly.py: star events for hours H..H+3, and test users that no model ever sees.

Two sources:
- the generated demo (batchrec load-demo): star times spread over the days before the end of
  H+3, so every hour gets new stars at the demo's own rate (total / (days * 24));
- a stars CSV without times (github-stars-tiny): times are simulated. Hour H holds about 91% of
  the stars and none of the stars of a random 3% of the repositories ("new" repositories); each of
  H+1, H+2 and H+3 reveals a random third of what was withheld (uniform within the hour); H's stars
  get times spread over the days before H's end.

Test users: a fixed random set of users whose stars are never written to MongoDB. Every model is
scored on them with the same 80/20 fold-in/target split of their stars before the hour's end, so
a warm and a full model of the same hour are compared on identical users and items, which no
training run has seen (the pipeline's own validation users change every hour, see bench_hourly).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from batchrec_dagster.sources.csv_import import read_stars_csv
from batchrec_dagster.sources.demo_data import DemoSpec, SourceData, generate_demo
from recvae import Recommender, evaluate, ndcg_at_k
from recvae.metrics import exclude_items

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class HourlyData:
    source: SourceData            # written to MongoDB: the test users' stars are not in it
    test_user_ids: np.ndarray     # per test star
    test_repo_ids: np.ndarray
    test_starred_at: np.ndarray   # datetime64[us]
    description: str


def _us(when: datetime) -> np.datetime64:
    return np.datetime64((when - _EPOCH) // timedelta(microseconds=1), "us")


def _split_off_test_users(data: SourceData, n_test: int, seed: int, description: str) -> HourlyData:
    rng = np.random.default_rng(seed)
    users = np.unique(data.star_user_ids)
    test = rng.choice(users, size=min(n_test, len(users) // 10), replace=False)
    is_test = np.isin(data.star_user_ids, test)
    kept = replace(data, star_user_ids=data.star_user_ids[~is_test],
                   star_repo_ids=data.star_repo_ids[~is_test], starred_at=data.starred_at[~is_test])
    return HourlyData(kept, data.star_user_ids[is_test], data.star_repo_ids[is_test],
                      data.starred_at[is_test], description)


def demo_hours(spec: DemoSpec, last_hour_end: datetime, n_test: int, seed: int = 0) -> HourlyData:
    data = generate_demo(spec, last_hour_end)
    rate = len(data.star_user_ids) / (spec.days * 24)
    return _split_off_test_users(data, n_test, seed, (
        f"generated demo: {spec.users:,} users, {spec.repos:,} repositories, {spec.mean_stars_per_user:g} "
        f"stars per user on average, times spread over {spec.days:g} days before the end of H+3, i.e. "
        f"about {rate:,.0f} new stars per hour"))


def csv_hours(directory: Path, hour_starts: list[datetime], n_test: int, new_share: float = 0.03,
              first_hour_share: float = 0.91, seed: int = 0) -> HourlyData:
    """hour_starts: the starts of H, H+1, H+2, H+3 (UTC). Hour H holds `first_hour_share` of the
    stars and none of a random `new_share` of the repositories; each later hour reveals a random
    third of what H withheld (new repositories' stars included), at uniform times in the hour."""
    data, _ = read_stars_csv(directory / "stars.csv", directory / "repos.csv", time_end=hour_starts[1],
                             spread_days=7.0, seed=seed)
    rng = np.random.default_rng(seed + 1)
    repos = np.unique(data.star_repo_ids)
    new = rng.choice(repos, int(round(new_share * len(repos))), replace=False)
    withheld = np.isin(data.star_repo_ids, new)
    extra = int(round((1 - first_hour_share) * len(withheld))) - int(withheld.sum())
    withheld[rng.choice(np.flatnonzero(~withheld), max(extra, 0), replace=False)] = True
    later = np.flatnonzero(withheld)
    hour_of = rng.integers(0, 3, len(later))
    times = data.starred_at.copy()
    hour_us = 3_600_000_000
    for i, start in enumerate(hour_starts[1:]):
        chosen = later[hour_of == i]
        times[chosen] = _us(start) + rng.integers(0, hour_us, len(chosen)).astype("timedelta64[us]")
    data = replace(data, starred_at=times)
    return _split_off_test_users(data, n_test, seed, (
        f"{directory.name} ({len(withheld):,} stars, no timestamps; simulated hours, seed {seed}): hour H "
        f"holds {1 - len(later) / len(withheld):.1%} of the stars and none of a random {new_share:.0%} of "
        f"the repositories ({len(new):,}); H+1, H+2 and H+3 each reveal a random third of the "
        f"{len(later):,} withheld stars, new repositories' included"))


def new_repository_recall(hours: HourlyData, model: Recommender, end: datetime, new_repo_ids: np.ndarray,
                          k: int = 100) -> dict[str, float]:
    """Recall@k on the test users' stars (before `end`) of `new_repo_ids` that the model knows:
    those stars are the target, the user's other stars the fold-in. Users with no such star, or
    nothing else to feed in, are left out."""
    before = hours.test_starred_at < _us(end)
    cols = model.index_of(hours.test_repo_ids[before])
    users, cols = hours.test_user_ids[before][cols >= 0], cols[cols >= 0]
    is_new = np.isin(model.item_ids[cols], new_repo_ids)
    targets = np.unique(users[is_new])
    fed = np.unique(users[~is_new])
    rows = np.intersect1d(targets, fed)
    if len(rows) == 0:
        return {f"new_recall@{k}": 0.0, "new_users": 0}
    keep = np.isin(users, rows)
    row = np.searchsorted(rows, users[keep])
    shape = (len(rows), model.n_items)
    ones = np.ones(int(keep.sum()), np.float32)
    fold = sp.csr_matrix((ones * ~is_new[keep], (row, cols[keep])), shape=shape)
    target = sp.csr_matrix((ones * is_new[keep], (row, cols[keep])), shape=shape)
    fold.eliminate_zeros()
    target.eliminate_zeros()
    metrics = evaluate(model, fold, target, ks=(k,))
    return {f"new_recall@{k}": float(metrics[f"recall@{k}"]), "new_users": int(metrics["users"])}


def score_test_users(hours: HourlyData, artifact_model: Recommender, end: datetime, seed: int = 0
                 ) -> dict[str, Any]:
    """NDCG@100 / Recall@20 (and NDCG@100 per user) of a model on the test users' stars before
    `end`, restricted to the model's repositories: 20% of each user's stars (at least 1) are
    scored, the rest fed in; users with fewer than 5 such stars are left out. The split depends
    only on the user, the stars and the seed, so models with the same vocabulary see the same
    fold-in and targets."""
    before = hours.test_starred_at < _us(end)
    cols = artifact_model.index_of(hours.test_repo_ids[before])
    users, cols = hours.test_user_ids[before][cols >= 0], cols[cols >= 0]
    order = np.lexsort((cols, users))
    users, cols = users[order], cols[order]
    rng = np.random.default_rng(seed)
    keys = rng.random(len(users))
    fold_rows, fold_cols, target_rows, target_cols = [], [], [], []
    row = 0
    for user in np.unique(users):
        mine = np.flatnonzero(users == user)
        if len(mine) < 5:
            continue
        ranked = mine[np.argsort(keys[mine])]
        n_target = max(1, int(0.2 * len(mine)))
        target_cols.append(cols[ranked[:n_target]])
        fold_cols.append(cols[ranked[n_target:]])
        target_rows.append(np.full(n_target, row))
        fold_rows.append(np.full(len(mine) - n_target, row))
        row += 1
    shape = (row, artifact_model.n_items)

    def csr(rows: list[np.ndarray], columns: list[np.ndarray]) -> sp.csr_matrix:
        r, c = np.concatenate(rows), np.concatenate(columns)
        return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=shape)

    fold, target = csr(fold_rows, fold_cols), csr(target_rows, target_cols)
    metrics = evaluate(artifact_model, fold, target)
    # per user, in user id order: models with the same vocabulary are compared user by user
    # (hourly_report's paired bootstrap of their ratio)
    per_user = ndcg_at_k(exclude_items(artifact_model.score(fold), fold), target, 100)
    return {"ndcg@100": float(metrics["ndcg@100"]), "recall@20": float(metrics["recall@20"]),
            "users": int(metrics["users"]), "ndcg@100_per_user": [round(float(x), 6) for x in per_user]}
