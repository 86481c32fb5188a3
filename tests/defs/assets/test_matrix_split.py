from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from batchrec_dagster.defs.assets.common import partition_seed
from batchrec_dagster.defs.assets.config import MatrixFilterConfig, SplitConfig
from batchrec_dagster.defs.assets.user_item_matrix import build_user_item_matrix
from batchrec_dagster.defs.assets.vae_input import build_vae_input
from batchrec_dagster.sources.demo_data import DemoSpec, generate_demo
from batchrec_dagster.storage.values import RawRepositories

END = datetime(2026, 3, 1, 12, tzinfo=UTC)


def raw_from(users, repos, catalogue):
    ids = np.array(sorted(catalogue), np.int64)
    return RawRepositories(
        repo_ids=ids, full_names=np.array([f"o/r{i}" for i in ids]),
        repo_stars=np.array([catalogue[i] for i in ids], np.int64), languages=np.array([""] * len(ids)),
        star_user_ids=np.asarray(users, np.int64), star_repo_ids=np.asarray(repos, np.int64),
        starred_at=np.full(len(users), np.datetime64("2026-03-01T00:00", "us")),
        window_start=END, window_end=END, layout="stars")


def test_filters_apply_until_stable_and_report_what_they_dropped():
    # users 1-3 star repos 10, 11, 12; user 4 stars 12 and the low-star repo 13; repo 14 has no stars
    pairs = [(u, r) for u in (1, 2, 3) for r in (10, 11, 12)] + [(4, 12), (4, 13)]
    users, repos = zip(*pairs, strict=True)
    raw = raw_from(users, repos, {10: 50, 11: 50, 12: 50, 13: 3, 14: 99})
    result = build_user_item_matrix(raw, MatrixFilterConfig(min_repo_stars=10, min_users_per_item=3,
                                                            min_items_per_user=2))
    # dropping repo 13 leaves user 4 with one repository, so user 4 goes too
    assert result.user_ids.tolist() == [1, 2, 3]
    assert result.item_ids.tolist() == [10, 11, 12]
    assert result.item_names.tolist() == ["o/r10", "o/r11", "o/r12"]
    assert result.matrix.nnz == 9 and result.matrix.dtype == np.float32
    assert result.dropped["repos_below_min_stars"] == 1
    assert result.dropped["stars_on_repos_below_min_stars"] == 1
    assert result.dropped["repos_without_stars"] == 1
    assert result.dropped["sparse_users"] == 1
    assert result.dropped["stars_of_sparse_users_or_items"] == 1


def demo_matrix():
    data = generate_demo(DemoSpec(users=300, repos=120, topics=6, mean_stars_per_user=15, seed=3), END)
    raw = RawRepositories(
        repo_ids=data.repo_ids, full_names=data.full_names, repo_stars=data.repo_stars,
        languages=data.languages, star_user_ids=data.star_user_ids, star_repo_ids=data.star_repo_ids,
        starred_at=data.starred_at, window_start=END, window_end=END, layout="stars")
    return build_user_item_matrix(raw, MatrixFilterConfig())


def test_split_is_deterministic_per_partition_and_leak_free():
    matrix = demo_matrix()
    config = SplitConfig(validation_users=50)
    a = build_vae_input(matrix, config, partition_seed("2026-03-01-20:00"))
    b = build_vae_input(matrix, config, partition_seed("2026-03-01-20:00"))
    c = build_vae_input(matrix, config, partition_seed("2026-03-01-21:00"))
    assert partition_seed("2026-03-01-20:00") != partition_seed("2026-03-01-21:00")
    np.testing.assert_array_equal(a.validation_user_ids, b.validation_user_ids)
    assert (a.validation_target != b.validation_target).nnz == 0
    # the same users are held out every hour (warm runs must not score users they trained on);
    # which of their items are scored changes with the partition
    np.testing.assert_array_equal(a.validation_user_ids, c.validation_user_ids)
    np.testing.assert_array_equal(a.test_user_ids, c.test_user_ids)
    assert (a.validation_target != c.validation_target).nnz > 0
    assert not set(a.train_user_ids.tolist()) & set(a.validation_user_ids.tolist())
    assert a.validation_fold_in.multiply(a.validation_target).nnz == 0
    # separate test users (they give the model's own score; validation only picks the epoch)
    assert len(a.test_user_ids) > 0 and a.test_fold_in.shape == (len(a.test_user_ids), len(a.item_ids))
    assert not set(a.test_user_ids.tolist()) & (set(a.train_user_ids.tolist())
                                                | set(a.validation_user_ids.tolist()))
    assert a.test_fold_in.multiply(a.test_target).nnz == 0
    np.testing.assert_array_equal(a.test_user_ids, b.test_user_ids)
    # 80/20: about a fifth of each held-out user's repositories are scored
    share = a.validation_target.nnz / (a.validation_target.nnz + a.validation_fold_in.nnz)
    assert 0.1 < share <= 0.2
    # names follow the (possibly narrower) training columns
    names = dict(zip(matrix.item_ids.tolist(), matrix.item_names.tolist(), strict=True))
    assert a.item_names.tolist() == [names[i] for i in a.item_ids.tolist()]


def test_too_few_users_is_a_clear_failure():
    import dagster as dg

    matrix = demo_matrix()
    with pytest.raises(dg.Failure, match="too few"):
        build_vae_input(matrix, SplitConfig(max_validation_fraction=0.001), seed=1)


def test_users_trained_on_in_one_hour_are_never_held_out_in_the_next():
    """Hour H sees 80% of the users, hour H+1 all of them (validation and test counts at their caps):
    nobody trained on at H is held out at H+1, and most held-out users stay held out."""
    matrix = demo_matrix()
    config = SplitConfig(validation_users=30, test_users=30)
    rng = np.random.default_rng(5)
    earlier = np.sort(rng.choice(matrix.matrix.shape[0], int(matrix.matrix.shape[0] * 0.8), replace=False))
    before = replace(matrix, matrix=matrix.matrix[earlier], user_ids=matrix.user_ids[earlier])
    h = build_vae_input(before, config, partition_seed("2026-03-01-20:00"))
    h1 = build_vae_input(matrix, config, partition_seed("2026-03-01-21:00"))
    held_next = set(h1.validation_user_ids.tolist()) | set(h1.test_user_ids.tolist())
    assert not set(h.train_user_ids.tolist()) & held_next
    held_before = set(h.validation_user_ids.tolist()) | set(h.test_user_ids.tolist())
    assert len(held_before & held_next) >= 0.6 * len(held_before)
