from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recvae import Popularity, Recommender, RecVAE, RecVAEConfig, Split


@pytest.fixture(scope="module")
def rec(small_split: Split) -> Recommender:
    model = RecVAE(small_split.train.shape[1], RecVAEConfig(hidden_dim=32, latent_dim=8))
    pop = Popularity().fit(small_split.train).popularity
    return Recommender(model, small_split.item_ids, pop)


def test_fold_in_of_an_unseen_user_excludes_own_items(rec: Recommender) -> None:
    own = [3, 17, 42]
    idx, scores = rec.recommend([own, [0]], k=10)
    assert idx.shape == scores.shape == (2, 10)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    assert not set(idx[0]) & set(own) and 0 not in idx[1]
    assert np.isfinite(scores).all()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_list_and_csr_inputs_agree(rec: Recommender) -> None:
    users = [[1, 2, 5], [7]]
    matrix = sp.csr_matrix((np.ones(4, np.float32), ([0, 0, 0, 1], [1, 2, 5, 7])), shape=(2, rec.n_items))
    a, sa = rec.recommend(users, k=5)
    b, sb = rec.recommend(matrix, k=5)
    assert np.array_equal(a, b) and np.allclose(sa, sb)


def test_empty_user_gets_popularity_ranking(rec: Recommender) -> None:
    idx, scores = rec.recommend([[]], k=5)
    assert np.isfinite(scores).all()
    expected = np.argsort(-rec.item_popularity, kind="stable")[:5]
    assert np.array_equal(np.sort(rec.item_popularity[idx[0]]), np.sort(rec.item_popularity[expected]))


def test_k_larger_than_candidates_is_padded(rec: Recommender) -> None:
    n = rec.n_items
    idx, scores = rec.recommend([list(range(n - 2))], k=n + 5)
    assert idx.shape == (1, n)
    assert sorted(idx[0, :2].tolist()) == [n - 2, n - 1]
    assert (idx[0, 2:] == -1).all() and np.isneginf(scores[0, 2:]).all()


def test_index_of_maps_ids_and_unknowns(rec: Recommender) -> None:
    ids = rec.item_ids
    got = rec.index_of(np.array([ids[5], ids[0], 10**12]))
    assert got.tolist() == [5, 0, -1]
    assert rec.index_of(["not-an-int"]).tolist() == [-1]
    # -1 from index_of can be fed to recommend directly.
    idx, _ = rec.recommend([rec.index_of([ids[2], 10**12]).tolist()], k=3)
    assert 2 not in idx[0]


def test_out_of_range_indices_and_negative_k_raise(rec: Recommender) -> None:
    with pytest.raises(ValueError):
        rec.recommend([[rec.n_items]], k=3)
    with pytest.raises(ValueError):
        rec.recommend([[0]], k=-1)


def test_vocabulary_size_must_match_model(small_split: Split) -> None:
    model = RecVAE(small_split.train.shape[1], RecVAEConfig(hidden_dim=8, latent_dim=2))
    with pytest.raises(ValueError):
        Recommender(model, small_split.item_ids[:-1], np.ones(model.n_items))
