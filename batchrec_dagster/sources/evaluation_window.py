"""Read one evaluation window from MongoDB: the stars given during an hour, by users who starred
enough before it, plus those users' earlier stars (what a model is fed to recommend from).

Only the window's stars and its users' histories are read (a range query on the indexed
`starred_at`, then `user_id $in` batches on the unique (user_id, repo_id) index), not the whole
collection, so the cost follows the hour's activity rather than the data's size; and histories
are read for a random subset of the window's users only until `max_users` qualify. The collections
are read through collections.py's names. Malformed stars are skipped and counted, as partition_reads.py does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import scipy.sparse as sp
from pymongo.database import Database

from batchrec_dagster.sources.collections import REPOSITORIES, STARS
from batchrec_dagster.sources.github_ids import star_id_problem

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
        if problem := star_id_problem(user_id, repo_id):  # user ids are int64 like repository ids
            skipped[problem] += 1
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


def _history(db: Database, user_ids: list[int], before: datetime, batch_size: int,
             skipped: Counter) -> np.ndarray:
    """The distinct (user, repo) pairs the users starred before `before`."""
    cursor = db[STARS].find({"user_id": {"$in": user_ids}, "starred_at": {"$lt": before}},
                            {"_id": 0, "user_id": 1, "repo_id": 1}, batch_size=batch_size)
    return _unique_pairs(*_pairs(cursor, skipped))


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


def _eligible_users(db: Database, targets: np.ndarray, start: datetime, *, min_history: int,
                    max_users: int | None, seed: int, batch_size: int, skipped: Counter
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(users, their earlier (user, repo) pairs, counts): the window's users in a random order
    (`seed`), their histories read one batch of users at a time until `max_users` of them have
    `min_history` earlier stars. Histories are the expensive read, so the cap bounds it."""
    order = np.random.default_rng(seed).permutation(np.unique(targets[:, 0]))
    users, histories, read, short, cut, pairs_read = [], [], 0, 0, 0, 0
    for i in range(0, len(order), USER_BATCH):
        batch = order[i:i + USER_BATCH]
        history = _history(db, batch.tolist(), start, batch_size, skipped)
        read += len(batch)
        pairs_read += len(history)
        h_users, h_counts = np.unique(history[:, 0], return_counts=True)
        enough = set(h_users[h_counts >= min_history].tolist())
        kept = [u for u in batch.tolist() if u in enough]   # in the random order
        short += len(batch) - len(kept)
        if max_users is not None:
            cut += max(0, len(kept) - (max_users - len(users)))
            kept = kept[:max_users - len(users)]
        users += kept
        histories.append(history[np.isin(history[:, 0], kept)])
        if max_users is not None and len(users) >= max_users:
            break
    counts = {"window_users": int(len(order)), "users_with_too_little_history": short,
              "history_stars_read": pairs_read,
              "users_left_out": int(len(order) - read + cut)}  # by the cap: unread, or read and cut
    history = np.concatenate(histories) if histories else np.zeros((0, 2), np.int64)
    return np.sort(np.asarray(users, dtype=np.int64)), history, counts


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
    users, history, counts = _eligible_users(db, targets, start, min_history=min_history,
                                             max_users=max_users, seed=seed, batch_size=batch_size,
                                             skipped=skipped)
    targets = targets[np.isin(targets[:, 0], users)]
    # a star already given before the window is not new (possible only in a collection with duplicates)
    targets = targets[~_pair_in(targets, history)]
    users = np.unique(targets[:, 0])   # a user whose every window star was old has nothing to score
    history = history[np.isin(history[:, 0], users)]
    repo_ids = np.union1d(history[:, 1], targets[:, 1])

    def csr(pairs: np.ndarray) -> sp.csr_matrix:
        rows, cols = np.searchsorted(users, pairs[:, 0]), np.searchsorted(repo_ids, pairs[:, 1])
        shape = (len(users), len(repo_ids))
        return sp.csr_matrix((np.ones(len(pairs), np.float32), (rows, cols)), shape=shape)

    counts.update({"window_stars": window_stars, "users": int(len(users)), "targets": int(len(targets)),
                   **{f"skipped_{k}": int(v) for k, v in sorted(skipped.items()) if v}})
    return EvaluationWindow(start, end, users, repo_ids, csr(history), csr(targets), counts)
