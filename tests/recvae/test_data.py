from __future__ import annotations

import numpy as np
import pytest

from recvae import Interactions, build_interactions, filter_min_counts, split_users, stable_user_order
from recvae.datasets import power_law_interactions


def test_build_interactions_dedupes_and_binarizes() -> None:
    users = np.array([10, 10, 3, 10, 3])
    items = np.array([7, 5, 7, 7, 9])
    inter = build_interactions(users, items)
    assert inter.user_ids.tolist() == [3, 10]
    assert inter.item_ids.tolist() == [5, 7, 9]
    m = inter.matrix
    assert m.dtype == np.float32 and m.has_sorted_indices
    assert m.nnz == 4  # the repeated (10, 7) pair counts once
    assert m.toarray().tolist() == [[0, 1, 1], [1, 1, 0]]


def test_build_interactions_string_ids_and_order_independence() -> None:
    users = np.array(["bob", "ann", "bob"], dtype=object)
    items = np.array(["x/y", "a/b", "a/b"], dtype=object)
    a = build_interactions(users, items)
    b = build_interactions(users[::-1], items[::-1])
    assert a.user_ids.dtype.kind == "U" and a.item_ids.tolist() == ["a/b", "x/y"]
    assert (a.matrix != b.matrix).nnz == 0
    assert a.matrix.toarray().tolist() == [[1, 0], [1, 1]]


def test_build_interactions_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        build_interactions(np.array([1, 2]), np.array([1]))


def test_filter_min_counts_repeats_until_stable() -> None:
    # Dropping item 2 (one user) leaves user 2 with a single item, which must then go too,
    # which leaves item 1 with one user.
    users = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    items = np.array([0, 1, 3, 0, 3, 4, 1, 2])
    inter = build_interactions(users, items)
    out, stats = filter_min_counts(inter, min_items_per_user=2, min_users_per_item=2)
    assert stats["rounds"] >= 2
    counts_u = np.diff(out.matrix.indptr)
    counts_i = np.bincount(out.matrix.indices, minlength=out.n_items)
    assert (counts_u >= 2).all() and (counts_i >= 2).all()
    assert stats["users_dropped"] == inter.n_users - out.n_users == 1
    assert stats["items_dropped"] == inter.n_items - out.n_items
    assert out.user_ids.tolist() == [0, 1] and out.item_ids.tolist() == [0, 3]


def _pairs(matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def test_split_invariants(small_inter: Interactions) -> None:
    split = split_users(small_inter, n_validation=50, n_test=40, seed=7)
    val, test = split.validation, split.test
    assert test is not None
    train_users, val_users, test_users = (
        set(split.train_user_ids.tolist()),
        set(val.user_ids.tolist()),
        set(test.user_ids.tolist()),
    )
    assert not (train_users & val_users) and not (train_users & test_users)
    assert not (val_users & test_users)
    n_items = len(split.item_ids)
    # Every column is seen in training, and held-out matrices use the same columns.
    assert (np.bincount(split.train.indices, minlength=n_items) > 0).all()
    for held in (val, test):
        assert held.fold_in.shape == held.target.shape == (len(held.user_ids), n_items)
        assert not (_pairs(held.fold_in) & _pairs(held.target))
        n_in, n_out = np.diff(held.fold_in.indptr), np.diff(held.target.indptr)
        assert (n_out >= 1).all() and (n_in >= 1).all()
        total = n_in + n_out
        assert (total >= 5).all()
        assert (n_out == np.maximum(1, np.floor(0.2 * total))).all()
        # Fold-in and target together are exactly the user's interactions on training items.
        rows = np.searchsorted(small_inter.user_ids, held.user_ids)
        cols = np.searchsorted(small_inter.item_ids, split.item_ids)
        original = small_inter.matrix[rows][:, cols]
        assert ((held.fold_in + held.target) != original).nnz == 0


def test_split_is_deterministic_by_seed(small_inter: Interactions) -> None:
    a = split_users(small_inter, n_validation=50, n_test=20, seed=3)
    b = split_users(small_inter, n_validation=50, n_test=20, seed=3)
    c = split_users(small_inter, n_validation=50, n_test=20, seed=4)
    assert (a.train != b.train).nnz == 0
    assert np.array_equal(a.validation.user_ids, b.validation.user_ids)
    assert (a.validation.target != b.validation.target).nnz == 0
    assert not np.array_equal(a.validation.user_ids, c.validation.user_ids)


def test_split_drops_heldout_users_with_too_few_items() -> None:
    # 20 users with 10 items each and 20 users with 3 items each.
    users = np.repeat(np.arange(40), [10] * 20 + [3] * 20)
    items = np.concatenate([np.arange(10)] * 20 + [np.arange(3)] * 20)
    inter = build_interactions(users, items)
    split = split_users(inter, n_validation=20, seed=0)
    assert split.test is None
    assert (np.diff(split.validation.fold_in.indptr) + np.diff(split.validation.target.indptr) >= 5).all()
    assert len(split.validation.user_ids) < 20
    held_3 = np.isin(split.validation.user_ids, np.arange(20, 40))
    assert not held_3.any()


def test_split_rejects_bad_arguments(small_inter: Interactions) -> None:
    with pytest.raises(ValueError):
        split_users(small_inter, n_validation=0)
    with pytest.raises(ValueError):
        split_users(small_inter, n_validation=300, n_test=200)
    with pytest.raises(ValueError):
        split_users(small_inter, n_validation=10, holdout_fraction=1.0)


def test_real_dataset_has_the_duplicate_removed(github_stars: Interactions) -> None:
    assert github_stars.matrix.shape == (2105, 4761)
    assert github_stars.matrix.nnz == 311_304 - 1


def test_power_law_generator_is_exact_deterministic_and_skewed() -> None:
    a = power_law_interactions(500, 200, 6000, seed=1)
    b = power_law_interactions(500, 200, 6000, seed=1)
    assert a.matrix.nnz == 6000 and (a.matrix != b.matrix).nnz == 0
    counts = np.bincount(a.item_ids[a.matrix.indices], minlength=200)
    assert counts[:20].sum() > 3 * counts[-20:].sum()


def test_stable_user_order_depends_only_on_ids_and_salt():
    ids = np.array([7, 3, 2**62, 0, 41, 99, 12345678901], dtype=np.int64)
    order = stable_user_order(ids)
    assert sorted(order.tolist()) == list(range(len(ids)))
    np.testing.assert_array_equal(stable_user_order(ids), order)
    # the same users come first whatever the row order
    shuffled = ids[::-1].copy()
    assert ids[order].tolist() == shuffled[stable_user_order(shuffled)].tolist()
    assert ids[stable_user_order(ids, salt=1)].tolist() != ids[order].tolist()
    with pytest.raises(TypeError, match="integers"):
        stable_user_order(np.array(["a", "b"]))


def test_split_users_holds_out_the_given_order(small_inter):
    order = stable_user_order(small_inter.user_ids)
    split = split_users(small_inter, n_validation=20, n_test=10, seed=1, user_order=order)
    other_seed = split_users(small_inter, n_validation=20, n_test=10, seed=2, user_order=order)
    first = set(small_inter.user_ids[order[:20]].tolist())
    assert set(split.validation.user_ids.tolist()) <= first
    assert set(split.test.user_ids.tolist()) <= set(small_inter.user_ids[order[20:30]].tolist())
    np.testing.assert_array_equal(split.validation.user_ids, other_seed.validation.user_ids)
    with pytest.raises(ValueError, match="permutation"):
        split_users(small_inter, n_validation=20, user_order=order[:-1])
