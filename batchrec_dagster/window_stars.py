"""Read one evaluation window from MongoDB: the stars given during an hour, by users who starred
enough before it, plus those users' earlier stars (what a model is fed to recommend from).

Only the window's stars and its users' histories are read (a range query on the indexed
`starred_at`, then `user_id $in` batches on the unique (user_id, repo_id) index), not the whole
collection, so the cost follows the hour's activity rather than the data's size. The collections
are read through stars.py's names. Malformed stars are skipped and counted, as sources.py does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import scipy.sparse as sp
from pymongo.database import Database

from batchrec_dagster.stars import REPOSITORIES, STARS, is_repo_id

USER_BATCH = 1000


@dataclass
class EvaluationWindow:
    """Users x repositories: `fold_in` = stars before `start`, `target` = new stars in [start, end)."""

    start: datetime
    end: datetime
    user_ids: np.ndarray              # int64, the users scored
    repo_ids: np.ndarray              # int64, sorted: the columns of fold_in and target
    fold_in: sp.csr_matrix
    target: sp.csr_matrix
    counts: dict[str, int] = field(default_factory=dict)   # what was read, skipped, left out

    @property
    def n_users(self) -> int:
        return len(self.user_ids)


def _pairs(cursor, skipped: Counter) -> tuple[np.ndarray, np.ndarray]:
    users, repos = [], []
    for doc in cursor:
        user_id, repo_id = doc.get("user_id"), doc.get("repo_id")
        if not is_repo_id(user_id):  # user ids are int64 like repository ids
            skipped["star_bad_user_id"] += 1
        elif not is_repo_id(repo_id):
            skipped["star_bad_repo_id"] += 1
        else:
            users.append(user_id)
            repos.append(repo_id)
    return np.asarray(users, dtype=np.int64), np.asarray(repos, dtype=np.int64)


def _known_repos(db: Database, repo_ids: np.ndarray) -> np.ndarray:
    ids = np.unique(repo_ids).tolist()
    known: list[int] = []
    for i in range(0, len(ids), USER_BATCH):
        batch = db[REPOSITORIES].find({"_id": {"$in": ids[i:i + USER_BATCH]}}, {"_id": 1})
        known += [d["_id"] for d in batch]
    return np.asarray(known, dtype=np.int64)


def _history(db: Database, user_ids: np.ndarray, before: datetime, batch_size: int,
             skipped: Counter) -> tuple[np.ndarray, np.ndarray]:
    users, repos = [], []
    ids = user_ids.tolist()
    for i in range(0, len(ids), USER_BATCH):
        cursor = db[STARS].find({"user_id": {"$in": ids[i:i + USER_BATCH]}, "starred_at": {"$lt": before}},
                                {"_id": 0, "user_id": 1, "repo_id": 1}, batch_size=batch_size)
        u, r = _pairs(cursor, skipped)
        users.append(u)
        repos.append(r)
    if not users:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(users), np.concatenate(repos)


def _unique_pairs(users: np.ndarray, repos: np.ndarray) -> np.ndarray:
    return np.unique(np.stack([users, repos], axis=1), axis=0) if len(users) else np.zeros((0, 2), np.int64)


def _pair_in(pairs: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each (user, repo) row of `pairs`, whether `others` holds it too."""
    if not len(pairs) or not len(others):
        return np.zeros(len(pairs), dtype=bool)
    users, repos = np.union1d(pairs[:, 0], others[:, 0]), np.union1d(pairs[:, 1], others[:, 1])

    def key(rows: np.ndarray) -> np.ndarray:  # dense indices, so the product fits in int64
        return np.searchsorted(users, rows[:, 0]) * len(repos) + np.searchsorted(repos, rows[:, 1])

    return np.isin(key(pairs), key(others))


def read_window(db: Database, start: datetime, end: datetime, *, min_history: int = 5,
                max_users: int | None = None, seed: int = 0, batch_size: int = 5000) -> EvaluationWindow:
    """The window [start, end): users with at least `min_history` earlier stars and at least one new
    star in it (a star on a repository they had starred before is not new); at most `max_users`
    of them, drawn with `seed`."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware")
    skipped: Counter = Counter()
    cursor = db[STARS].find({"starred_at": {"$gte": start, "$lt": end}},
                            {"_id": 0, "user_id": 1, "repo_id": 1}, batch_size=batch_size)
    w_users, w_repos = _pairs(cursor, skipped)
    window_stars = len(w_users)
    known = np.isin(w_repos, _known_repos(db, w_repos))
    skipped["star_unknown_repo"] += int((~known).sum())
    targets = _unique_pairs(w_users[known], w_repos[known])
    history = _unique_pairs(*_history(db, np.unique(targets[:, 0]), start, batch_size, skipped))

    # a star already given before the window is not new (possible only in a collection with duplicates)
    targets = targets[~_pair_in(targets, history)]
    users_with_target = np.unique(targets[:, 0])
    h_users, h_counts = np.unique(history[:, 0], return_counts=True)
    enough = h_users[h_counts >= min_history]
    users = np.intersect1d(users_with_target, enough)
    counts = {"window_stars": window_stars, "window_users": int(len(users_with_target)),
              "users_with_too_little_history": int(len(users_with_target) - len(users))}
    if max_users is not None and len(users) > max_users:
        counts["users_left_out"] = int(len(users) - max_users)
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))

    history = history[np.isin(history[:, 0], users)]
    targets = targets[np.isin(targets[:, 0], users)]
    repo_ids = np.union1d(history[:, 1], targets[:, 1])

    def csr(pairs: np.ndarray) -> sp.csr_matrix:
        rows, cols = np.searchsorted(users, pairs[:, 0]), np.searchsorted(repo_ids, pairs[:, 1])
        shape = (len(users), len(repo_ids))
        return sp.csr_matrix((np.ones(len(pairs), np.float32), (rows, cols)), shape=shape)

    counts.update({"users": int(len(users)), "targets": int(len(targets)),
                   **{f"skipped_{k}": int(v) for k, v in sorted(skipped.items()) if v}})
    return EvaluationWindow(start, end, users, repo_ids, csr(history), csr(targets), counts)
