from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae import EASE, Popularity, Split, choose_ease_lambda, evaluate


def test_popularity_counts_and_scores(small_split: Split) -> None:
    pop = Popularity().fit(small_split.train)
    expected = np.asarray(small_split.train.sum(0)).ravel()
    assert np.array_equal(pop.popularity, expected)
    scores = pop.score(small_split.validation.fold_in[:3])
    assert scores.shape == (3, small_split.train.shape[1])
    assert torch.equal(scores[0], scores[2])


def test_ease_matches_closed_form() -> None:
    x = sp.csr_matrix(np.random.default_rng(0).random((30, 8)) < 0.3, dtype=np.float32)
    lam = 5.0
    model = EASE(lam).fit(x)
    g = x.T.toarray() @ x.toarray() + lam * np.eye(8)
    p = np.linalg.inv(g)
    b = np.eye(8) - p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    assert model.weights is not None
    np.testing.assert_allclose(model.weights.numpy(), b, atol=1e-5)
    scores = model.score(x[:4])
    np.testing.assert_allclose(scores.numpy(), x[:4].toarray() @ b, atol=1e-5)


def test_choose_ease_lambda_picks_the_best_validation_score(small_split: Split) -> None:
    val = small_split.validation
    best, by_lambda = choose_ease_lambda(small_split.train, val, lambdas=(1.0, 50.0, 500.0))
    assert set(by_lambda) == {1.0, 50.0, 500.0}
    assert by_lambda[best] == max(by_lambda.values())
    ease = evaluate(EASE(best).fit(small_split.train), val.fold_in, val.target)["ndcg@100"]
    assert ease == pytest.approx(by_lambda[best])


def test_ease_score_before_fit_raises() -> None:
    with pytest.raises(RuntimeError):
        EASE().score(sp.csr_matrix((1, 3), dtype=np.float32))
