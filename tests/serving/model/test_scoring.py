"""The serving scorer must answer exactly like `recvae.Recommender.recommend`."""

from __future__ import annotations

import numpy as np
import pytest

from batchrec_dagster.serving.model.scoring import BatchScorer
from recvae import Recommender, RecVAE, RecVAEConfig


@pytest.fixture(scope="module")
def recommender() -> Recommender:
    rng = np.random.default_rng(3)
    n = 60
    return Recommender(RecVAE(n, RecVAEConfig(hidden_dim=32, latent_dim=8, seed=3)),
                       rng.choice(10**6, n, replace=False), rng.integers(0, 100, n).astype(np.float32))


def test_batches_match_recommender(recommender: Recommender) -> None:
    rng = np.random.default_rng(0)
    n = recommender.n_items
    users = [np.zeros(0, dtype=np.int64), rng.choice(n, n - 3, replace=False), np.array([5])]
    users += [rng.choice(n, int(rng.integers(1, 20)), replace=False) for _ in range(13)]
    scorer = BatchScorer(recommender)
    for k in (1, 10, n, n + 5):
        expected_idx, expected_scores = recommender.recommend(users, k)
        idx, scores = scorer.recommend(users, k)
        assert idx.shape == expected_idx.shape == (len(users), min(k, n))
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    # the user holding all but three items gets those three, then padding
    idx, scores = scorer.recommend(users[1:2], 10)
    assert set(idx[0, :3]) == set(range(n)) - set(users[1]) and (idx[0, 3:] == -1).all()
    assert np.isneginf(scores[0, 3:]).all()
    # each user alone gets what it gets in a batch
    for user, row in zip(users, scorer.recommend(users, 7)[0], strict=True):
        np.testing.assert_array_equal(scorer.recommend([user], 7)[0][0], row)


def test_out_of_range_columns_are_refused(recommender: Recommender) -> None:
    with pytest.raises(ValueError, match="column indices"):
        BatchScorer(recommender).recommend([np.array([recommender.n_items])], 5)
    with pytest.raises(ValueError, match="column indices"):
        BatchScorer(recommender).recommend([np.array([-1])], 5)
