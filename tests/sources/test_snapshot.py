"""merge_sorted, the hourly merge of new stars into a snapshot, against sorting everything again."""

import numpy as np
import pytest

from batchrec_dagster.sources.snapshot import StarColumns, merge_sorted, sort_stars

BASE = np.datetime64("2026-06-01T00:00:00", "us")


def _stars(rng: np.random.Generator, n: int, repos: np.ndarray, hours: tuple[int, int],
           nat_share: float = 0.0) -> StarColumns:
    times = BASE + rng.integers(hours[0] * 3600, hours[1] * 3600, n).astype("timedelta64[s]")
    times = times.astype("datetime64[us]")
    times[rng.random(n) < nat_share] = np.datetime64("NaT")
    return StarColumns(rng.integers(1, 300, n), rng.choice(repos, n), times)


def _same(a: StarColumns, b: StarColumns) -> None:
    for field in ("user_ids", "repo_ids", "starred_at"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@pytest.mark.parametrize("seed", range(6))
def test_merge_equals_sorting_everything_again(seed):
    rng = np.random.default_rng(seed)
    catalogue = rng.choice(np.arange(10, 10_000), 60, replace=False)  # unsorted, as read
    unknown = np.arange(20_000, 20_010)  # repositories the catalogue does not have: orphans
    snapshot, _, _ = sort_stars(catalogue, _stars(rng, 3000, catalogue, (0, 24), nat_share=0.01))
    # the hour: new pairs, pairs the snapshot has (later, earlier and NaT times), and orphans
    added = StarColumns.concat(_stars(rng, 400, catalogue, (24, 25), nat_share=0.05),
                               _stars(rng, 50, catalogue, (-5, 0)),
                               _stars(rng, 30, unknown, (24, 25)))
    expected = sort_stars(catalogue, StarColumns.concat(snapshot, added))
    merged, orphans, duplicates = merge_sorted(catalogue, snapshot, added)
    _same(merged, expected[0])
    _same(orphans, expected[1])
    assert duplicates == expected[2] > 0
    assert len(orphans) == 30


def test_a_repository_that_left_the_catalogue_is_sorted_again():
    rng = np.random.default_rng(7)
    catalogue = np.arange(1, 40)
    snapshot, _, _ = sort_stars(catalogue, _stars(rng, 500, catalogue, (0, 24)))
    smaller = catalogue[catalogue != snapshot.repo_ids[0]]  # its stars become orphans
    added = _stars(rng, 100, smaller, (24, 25))
    expected = sort_stars(smaller, StarColumns.concat(snapshot, added))
    merged, orphans, duplicates = merge_sorted(smaller, snapshot, added)
    _same(merged, expected[0])
    _same(orphans, expected[1])
    assert duplicates == expected[2]
    assert (orphans.repo_ids == snapshot.repo_ids[0]).any()


def test_nothing_added_returns_the_snapshot():
    rng = np.random.default_rng(3)
    catalogue = np.arange(1, 40)
    snapshot, _, _ = sort_stars(catalogue, _stars(rng, 200, catalogue, (0, 24)))
    merged, orphans, duplicates = merge_sorted(catalogue, snapshot, StarColumns.empty())
    _same(merged, snapshot)
    assert len(orphans) == 0 and duplicates == 0


def test_ids_too_large_for_one_key_are_sorted_again():
    rng = np.random.default_rng(5)
    catalogue = np.arange(1, 40)
    big = _stars(rng, 300, catalogue, (0, 24))
    big.user_ids += 2**62  # user * len(catalogue) would overflow int64
    snapshot, _, _ = sort_stars(catalogue, big)
    added = _stars(rng, 50, catalogue, (24, 25))
    expected = sort_stars(catalogue, StarColumns.concat(snapshot, added))
    merged, _, _ = merge_sorted(catalogue, snapshot, added)
    _same(merged, expected[0])
