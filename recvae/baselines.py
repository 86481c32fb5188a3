"""Baselines with the Scorer interface: item popularity and EASE (Steck, WWW 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recvae.data import HeldOut
from recvae.metrics import evaluate

DEFAULT_EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)


class Popularity:
    """Scores every item by its number of training users, the same for every user."""

    def __init__(self) -> None:
        self.popularity = np.zeros(0, dtype=np.int64)

    def fit(self, train: sp.csr_matrix) -> Popularity:
        train = sp.csr_matrix(train)
        self.popularity = np.bincount(train.indices, minlength=train.shape[1]).astype(np.int64)
        return self

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        """[B, n_items] float32; an expanded view, so do not modify it in place."""
        row = torch.from_numpy(self.popularity.astype(np.float32))
        return row.unsqueeze(0).expand(fold_in.shape[0], -1)


class EASE:
    """Closed-form item-item linear model: B = I - P / diag(P), P = (X^T X + lambda I)^-1.

    Needs a dense n_items x n_items matrix (float64 while solving), so it suits catalogues up to a
    few tens of thousands of items.
    """

    def __init__(self, lam: float = 500.0) -> None:
        self.lam = float(lam)
        self.weights: torch.Tensor | None = None

    def fit(self, train: sp.csr_matrix) -> EASE:
        x = sp.csr_matrix(train, dtype=np.float64)
        gram = torch.from_numpy((x.T @ x).toarray())
        gram.diagonal().add_(self.lam)
        precision = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        weights = precision / -precision.diagonal()
        weights.diagonal().zero_()
        self.weights = weights.float()
        return self

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError("EASE.score called before fit")
        scores = sp.csr_matrix(fold_in, dtype=np.float32) @ self.weights.numpy()
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))


def choose_ease_lambda(
    train: sp.csr_matrix,
    validation: HeldOut,
    lambdas: Sequence[float] = DEFAULT_EASE_LAMBDAS,
) -> tuple[float, dict[float, float]]:
    """The lambda with the best validation NDCG@100, and NDCG@100 for every lambda tried."""
    if not lambdas:
        raise ValueError("lambdas must not be empty")
    scores: dict[float, float] = {}
    for lam in lambdas:
        model = EASE(lam).fit(train)
        scores[float(lam)] = evaluate(model, validation.fold_in, validation.target)["ndcg@100"]
    best = max(scores, key=lambda lam: scores[lam])
    return best, scores
