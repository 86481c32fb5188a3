from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae import evaluate, ndcg_at_k, recall_at_k


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    dense = np.zeros((len(rows), n_items), dtype=np.float32)
    for u, items in enumerate(rows):
        dense[u, items] = 1.0
    return sp.csr_matrix(dense)


# Items ranked by score: user 0 ranks 0,1,2,3,4,5; user 1 ranks 5,4,3,2,1,0.
SCORES = torch.tensor([[6.0, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6]])


def test_ndcg_hand_computed() -> None:
    target = _csr([[1, 3], [0]], 6)
    got = ndcg_at_k(SCORES, target, 3)
    # user 0: hit at rank 2 only (item 3 is rank 4 > k); ideal = 2 hits at ranks 1, 2.
    expected_0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    # user 1: item 0 is ranked last, outside the top 3.
    assert got.tolist() == pytest.approx([expected_0, 0.0])


def test_ndcg_ideal_uses_min_of_k_and_heldout() -> None:
    # Three targets but k = 2: a perfect top-2 must score exactly 1.
    target = _csr([[0, 1, 2]], 6)
    assert ndcg_at_k(SCORES[:1], target, 2).tolist() == pytest.approx([1.0])


def test_recall_hand_computed() -> None:
    target = _csr([[1, 3, 5], [5]], 6)
    got = recall_at_k(SCORES, target, 2)
    # user 0: 1 hit in top 2, normalised by min(2, 3) = 2; user 1: 1 hit of 1.
    assert got.tolist() == pytest.approx([0.5, 1.0])


def test_users_without_heldout_items_are_skipped_not_nan() -> None:
    target = _csr([[], [5]], 6)
    ndcg, recall = ndcg_at_k(SCORES, target, 3), recall_at_k(SCORES, target, 3)
    assert ndcg.shape == recall.shape == (1,)
    assert ndcg.tolist() == pytest.approx([1.0]) and recall.tolist() == pytest.approx([1.0])
    assert np.isfinite(ndcg_at_k(SCORES, _csr([[], []], 6), 3)).all()


def test_metric_functions_accept_numpy_scores() -> None:
    target = _csr([[0], [0]], 6)
    assert recall_at_k(SCORES.numpy(), target, 1).tolist() == pytest.approx([1.0, 0.0])


class _Fixed:
    """A scorer that always returns the same row, as the fixture SCORES[0]."""

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        return SCORES[:1].expand(fold_in.shape[0], -1)


def test_evaluate_excludes_fed_in_items_and_batches() -> None:
    # User 0 fed items 0 and 1, so its ranking starts 2, 3, 4; target 2 is rank 1.
    # User 1 fed item 0, target 1 is rank 1. User 2 has no target and is not counted.
    fold_in = _csr([[0, 1], [0], [3]], 6)
    target = _csr([[2], [1], []], 6)
    for batch_size in (1, 2, 1000):
        result = evaluate(_Fixed(), fold_in, target, ks=(1, 100), batch_size=batch_size)
        assert result["users"] == 2
        assert result["ndcg@1"] == pytest.approx(1.0)
        assert result["recall@1"] == pytest.approx(1.0)
        assert result["ndcg@100"] == pytest.approx(1.0)


def test_evaluate_default_keys_and_empty_target() -> None:
    fold_in, target = _csr([[0]], 6), _csr([[]], 6)
    result = evaluate(_Fixed(), fold_in, target)
    for key in ("ndcg@100", "recall@20", "recall@50", "ndcg@20", "recall@100", "users"):
        assert key in result
    assert result["users"] == 0
    assert all(math.isfinite(v) for v in result.values())


def test_evaluate_hand_computed_partial_hits() -> None:
    fold_in = _csr([[0]], 6)
    target = _csr([[2, 5]], 6)
    # Ranking after excluding 0: 1, 2, 3, 4, 5 -> hits at ranks 2 and 5.
    result = evaluate(_Fixed(), fold_in, target, ks=(2, 5))
    idcg = 1 + 1 / math.log2(3)
    assert result["ndcg@2"] == pytest.approx((1 / math.log2(3)) / idcg)
    assert result["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / idcg)
    assert result["recall@2"] == pytest.approx(0.5)
    assert result["recall@5"] == pytest.approx(1.0)


def test_evaluate_counts_items_outside_the_columns_as_misses() -> None:
    # user 0 holds out items 1 (a column) and one item the scorer does not know; user 1 holds out
    # only unknown items: it is still scored, with 0
    fold_in = _csr([[0], [2]], 6)
    target = _csr([[1], []], 6)
    result = evaluate(_Fixed(), fold_in, target, ks=(3,), n_relevant=np.array([2, 1]))
    # _Fixed ranks 0,1,2,...; with item 0 fed in, item 1 is at rank 1: DCG 1, ideal 1 + 1/log2(3)
    assert result["users"] == 2
    assert result["ndcg@3"] == pytest.approx((1 / (1 + 1 / math.log2(3))) / 2)
    assert result["recall@3"] == pytest.approx((1 / 2) / 2)
    with pytest.raises(ValueError, match="n_relevant"):
        evaluate(_Fixed(), fold_in, target, n_relevant=np.array([0, 1]))
