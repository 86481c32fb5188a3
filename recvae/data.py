"""Interaction matrices and the Mult-VAE held-out-user split.

Everything is vectorized over interactions (np.unique / lexsort / bincount); there is no Python
loop per user or per interaction, so a few million pairs take well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class Interactions:
    """Binary CSR user x item matrix plus the original ids of its rows and columns."""

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])


@dataclass
class HeldOut:
    """Held-out users: `fold_in` is fed to the model, `target` is what gets scored."""

    user_ids: np.ndarray
    fold_in: sp.csr_matrix
    target: sp.csr_matrix

    @property
    def n_users(self) -> int:
        return int(self.fold_in.shape[0])


@dataclass
class Split:
    train: sp.csr_matrix
    train_user_ids: np.ndarray
    item_ids: np.ndarray
    validation: HeldOut
    test: HeldOut | None


def normalize_ids(ids: np.ndarray) -> np.ndarray:
    """Integers become int64, everything else a numpy unicode array (never object dtype)."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iub":
        return ids.astype(np.int64, copy=False)
    if ids.dtype.kind == "U":
        return ids
    return ids.astype(str)


def binary_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR with value 1.0 from (row, col) pairs that are already unique and sorted by (row, col)."""
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    data = np.ones(len(cols), dtype=np.float32)
    matrix = sp.csr_matrix((data, cols.astype(np.int32, copy=False), indptr), shape=shape)
    matrix.has_sorted_indices = True
    return matrix


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """np.unique of a 1-d array, by sorting: NumPy 2.3+ hashes integers in np.unique, which took 3.9 s
    on the 4.6M (user, item) keys of a 4x-demo snapshot, where this whole CSR build takes 0.3 s, and
    the hourly matrix is rebuilt from every star (benchmarks/results/snapshot_costs.md)."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def build_interactions(users: np.ndarray, items: np.ndarray) -> Interactions:
    """De-duplicate (user, item) pairs and binarize them into a CSR matrix.

    Rows and columns are ordered by sorted original id, so the result does not depend on the
    order of the input pairs.
    """
    users = normalize_ids(users)
    items = normalize_ids(items)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(f"users and items must be 1-d and equally long, got {users.shape} and {items.shape}")
    user_ids, rows = np.unique(users, return_inverse=True)
    item_ids, cols = np.unique(items, return_inverse=True)
    n_items = max(len(item_ids), 1)
    keys = unique_sorted(rows.astype(np.int64) * n_items + cols.astype(np.int64))
    matrix = binary_csr(keys // n_items, keys % n_items, (len(user_ids), len(item_ids)))
    return Interactions(matrix=matrix, user_ids=user_ids, item_ids=item_ids)


def filter_min_counts(
    inter: Interactions,
    *,
    min_items_per_user: int,
    min_users_per_item: int,
    max_rounds: int = 100,
) -> tuple[Interactions, dict[str, int]]:
    """Drop sparse users and items, repeatedly, because each drop can push others under the bar.

    Returns the filtered interactions and {"users_dropped", "items_dropped", "rounds"}.
    """
    matrix = inter.matrix.tocsr()
    user_ids, item_ids = inter.user_ids, inter.item_ids
    rounds = 0
    while rounds < max_rounds:
        user_counts = np.diff(matrix.indptr)
        item_counts = np.bincount(matrix.indices, minlength=matrix.shape[1])
        keep_users = user_counts >= min_items_per_user
        keep_items = item_counts >= min_users_per_item
        if keep_users.all() and keep_items.all():
            break
        rounds += 1
        matrix = matrix[keep_users][:, keep_items].tocsr()
        user_ids, item_ids = user_ids[keep_users], item_ids[keep_items]
    matrix.sort_indices()
    stats = {
        "users_dropped": inter.n_users - len(user_ids),
        "items_dropped": inter.n_items - len(item_ids),
        "rounds": rounds,
    }
    return Interactions(matrix=matrix, user_ids=user_ids, item_ids=item_ids), stats


def _holdout(
    matrix: sp.csr_matrix,
    user_ids: np.ndarray,
    *,
    holdout_fraction: float,
    min_items: int,
    rng: np.random.Generator,
) -> HeldOut:
    counts = np.diff(matrix.indptr)
    keep = counts >= min_items
    matrix = matrix[keep].tocsr()
    matrix.sort_indices()
    counts = counts[keep]
    n_target = np.clip(np.floor(holdout_fraction * counts).astype(np.int64), 1, counts - 1)
    row_of = np.repeat(np.arange(matrix.shape[0]), counts)
    # A random key per interaction, sorted within each row, picks a uniform random subset per user.
    order = np.lexsort((rng.random(matrix.nnz), row_of))
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[row_of[order]]
    is_target = rank < n_target[row_of]
    shape = matrix.shape
    target = binary_csr(row_of[is_target], matrix.indices[is_target], shape)
    fold_in = binary_csr(row_of[~is_target], matrix.indices[~is_target], shape)
    return HeldOut(user_ids=user_ids[keep], fold_in=fold_in, target=target)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def stable_user_order(user_ids: np.ndarray, salt: int = 0) -> np.ndarray:
    """Row indices ordered by a fixed hash of each user's id (splitmix64 of id and `salt`).

    Passed to `split_users(user_order=...)`, it holds out the users with the smallest hashes: the
    same users call after call as the data grows. With fixed held-out counts, a user joins the
    held-out set only when new, and leaves it (into training) only when users with smaller hashes
    arrive, so a model trained on one snapshot and continued on the next (warm start) is never
    validated or scored on users it trained on. (Where the counts grow with the data, each extra
    held-out place takes one user from training.) A random permutation per call would hold out
    users the earlier model trained on.
    """
    ids = np.asarray(user_ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"user ids must be integers to hash, got dtype {ids.dtype}")
    with np.errstate(over="ignore"):  # splitmix64 relies on wrap-around uint64 arithmetic
        z = ids.astype(np.int64).view(np.uint64) + _GOLDEN * np.uint64(salt + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.lexsort((ids, z))  # ties (equal hashes need equal ids) broken by id


def split_users(
    inter: Interactions,
    *,
    n_validation: int,
    n_test: int = 0,
    holdout_fraction: float = 0.2,
    min_heldout_items: int = 5,
    seed: int = 0,
    user_order: np.ndarray | None = None,
) -> Split:
    """Mult-VAE protocol (Liang et al. 2018): whole users are held out for validation and test.

    For each held-out user, `holdout_fraction` of their items (at least one, never all) become the
    scored target and the rest the fold-in input. Columns are restricted to items with at least
    one interaction among training users; held-out users left with fewer than `min_heldout_items`
    items are dropped, so a HeldOut can have fewer users than requested.

    Which users are held out: the first `n_validation` rows of `user_order` for validation, the
    next `n_test` for test (a permutation of the rows; `stable_user_order` keeps them the same as
    the data grows). Without it, a random permutation drawn from `seed`. `seed` also draws which
    of a held-out user's items are scored.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in (0, 1)")
    if min_heldout_items < 2:
        raise ValueError("min_heldout_items must be >= 2 so fold-in and target are both non-empty")
    n_users = inter.n_users
    if n_validation < 1 or n_test < 0 or n_validation + n_test >= n_users:
        raise ValueError(
            f"need 1 <= n_validation and n_validation + n_test < n_users ({n_users}), "
            f"got {n_validation} and {n_test}"
        )
    rng = np.random.default_rng(seed)
    if user_order is None:
        perm = rng.permutation(n_users)
    else:
        perm = np.asarray(user_order)
        if perm.shape != (n_users,) or not np.array_equal(np.sort(perm), np.arange(n_users)):
            raise ValueError(f"user_order must be a permutation of the {n_users} rows")
    val_rows = np.sort(perm[:n_validation])
    test_rows = np.sort(perm[n_validation : n_validation + n_test])
    train_rows = np.sort(perm[n_validation + n_test :])

    matrix = inter.matrix.tocsr()
    train = matrix[train_rows]
    seen = np.bincount(train.indices, minlength=matrix.shape[1]) > 0
    train = train[:, seen].tocsr()
    nonempty = np.diff(train.indptr) > 0
    train = train[nonempty].tocsr()
    train.sort_indices()

    def held(rows: np.ndarray) -> HeldOut:
        return _holdout(
            matrix[rows][:, seen].tocsr(),
            inter.user_ids[rows],
            holdout_fraction=holdout_fraction,
            min_items=min_heldout_items,
            rng=rng,
        )

    validation = held(val_rows)
    test = held(test_rows) if n_test > 0 else None
    return Split(
        train=train,
        train_user_ids=inter.user_ids[train_rows][nonempty],
        item_ids=inter.item_ids[seen],
        validation=validation,
        test=test,
    )
