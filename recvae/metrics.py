"""Ranking metrics with the Mult-VAE normalisation, computed batched on the scores' device.

NDCG@k divides by the ideal DCG of min(k, #held-out) hits and Recall@k by min(k, #held-out), so a
perfect ranking scores 1.0 for every user. Users without held-out items are dropped (never NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch

from recvae.device import resolve_device


class Scorer(Protocol):
    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        """Scores [B, n_items] for B users given as CSR rows; higher is better."""
        ...


def _as_tensor(scores: torch.Tensor | np.ndarray, device: torch.device | str | None) -> torch.Tensor:
    t = scores if isinstance(scores, torch.Tensor) else torch.from_numpy(np.asarray(scores))
    if device is not None:
        t = t.to(device)
    return t.float()


def csr_to_dense_mask(matrix: sp.csr_matrix, device: torch.device | str) -> torch.Tensor:
    """Boolean [B, n_items] tensor built on `device` from the CSR's coordinates (per batch only)."""
    matrix = sp.csr_matrix(matrix)
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    mask = torch.zeros(matrix.shape, dtype=torch.bool, device=device)
    mask[torch.from_numpy(rows).to(device), torch.from_numpy(matrix.indices.astype(np.int64)).to(device)] = (
        True
    )
    return mask


def exclude_items(scores: torch.Tensor, fold_in: sp.csr_matrix) -> torch.Tensor:
    """A copy of `scores` with each user's fed-in items set to -inf, so they cannot be ranked."""
    return scores.masked_fill(csr_to_dense_mask(fold_in, scores.device), float("-inf"))


def _hits(scores: torch.Tensor, target: sp.csr_matrix, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hits [B, k] float: 1 where the rank-r item is a target, #targets [B] float)."""
    if scores.shape != target.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and target {target.shape} differ in shape")
    k = min(k, scores.shape[1])
    top = torch.topk(scores, k, dim=1).indices
    mask = csr_to_dense_mask(target, scores.device)
    hits = mask.gather(1, top).float()
    n_target = torch.from_numpy(np.diff(sp.csr_matrix(target).indptr).astype(np.float32))
    return hits, n_target.to(scores.device)


def _discounts(k: int, device: torch.device) -> torch.Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, device=device, dtype=torch.float32))


def _ndcg(hits: torch.Tensor, n_target: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, hits.shape[1])
    disc = _discounts(k, hits.device)
    dcg = (hits[:, :k] * disc).sum(1)
    ideal_cum = torch.cumsum(disc, 0)
    n_ideal = n_target.clamp(max=k).long()
    idcg = ideal_cum[(n_ideal - 1).clamp(min=0)]
    return dcg / idcg


def _recall(hits: torch.Tensor, n_target: torch.Tensor, k: int) -> torch.Tensor:
    return hits[:, :k].sum(1) / n_target.clamp(max=k).clamp(min=1)


def ndcg_at_k(scores: torch.Tensor | np.ndarray, target: sp.csr_matrix, k: int) -> np.ndarray:
    """Per-user NDCG@k over users with at least one target item. Scores are ranked as given:
    exclude fed-in items first (see `exclude_items`)."""
    scores = _as_tensor(scores, None)
    hits, n_target = _hits(scores, target, k)
    keep = n_target > 0
    return _ndcg(hits, n_target, k)[keep].cpu().numpy()


def recall_at_k(scores: torch.Tensor | np.ndarray, target: sp.csr_matrix, k: int) -> np.ndarray:
    """Per-user Recall@k = hits / min(k, #targets), over users with at least one target item."""
    scores = _as_tensor(scores, None)
    hits, n_target = _hits(scores, target, k)
    keep = n_target > 0
    return _recall(hits, n_target, k)[keep].cpu().numpy()


def evaluate(
    scorer: Scorer,
    fold_in: sp.csr_matrix,
    target: sp.csr_matrix,
    *,
    ks: Sequence[int] = (20, 50, 100),
    batch_size: int = 1000,
    device: torch.device | str | None = None,
    n_relevant: np.ndarray | None = None,
    with_se: bool = False,
) -> dict[str, float]:
    """Mean NDCG@k and Recall@k for every k in `ks`, plus "users" (how many were scored).

    `with_se`: also the standard error of each mean over users, as "<metric>@<k>_se" (a warm
    run's acceptance rule weighs a drop in validation NDCG against it).

    Fed-in items are excluded from the ranking. With no scorable user every metric is 0.0.

    `n_relevant` (one count per row) says how many items each user really holds out when some of
    them are not columns of this scorer (e.g. repositories newer than a model): those count as
    misses, in the normalisation and in which users are scored, so that models with different
    vocabularies are scored on the same users and the same held-out items.
    """
    fold_in, target = sp.csr_matrix(fold_in), sp.csr_matrix(target)
    device = resolve_device(device) if device is not None else None
    if fold_in.shape != target.shape:
        raise ValueError(f"fold_in {fold_in.shape} and target {target.shape} differ in shape")
    ks = sorted(set(int(k) for k in ks))
    k_max = max(ks)
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("ndcg", "recall")}
    totals: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    n_users = 0
    in_columns = np.diff(target.indptr)
    if n_relevant is not None:
        n_relevant = np.asarray(n_relevant, dtype=np.int64)
        if n_relevant.shape != (target.shape[0],) or (n_relevant < in_columns).any():
            raise ValueError("n_relevant needs one count per row, at least the row's target items")
    counts = in_columns if n_relevant is None else n_relevant
    has_target = counts > 0
    for start in range(0, fold_in.shape[0], batch_size):
        stop = start + batch_size
        rows = np.flatnonzero(has_target[start:stop]) + start
        if len(rows) == 0:
            continue
        batch_in, batch_target = fold_in[rows], target[rows]
        scores = _as_tensor(scorer.score(batch_in), device)
        scores = exclude_items(scores, batch_in)
        hits, n_target = _hits(scores, batch_target, k_max)
        if n_relevant is not None:
            n_target = torch.from_numpy(n_relevant[rows].astype(np.float32)).to(n_target.device)
        for k in ks:
            for name, fn in (("ndcg", _ndcg), ("recall", _recall)):
                key = f"{name}@{k}"
                per_user = fn(hits, n_target, k)
                value, square = per_user.sum(), per_user.square().sum()
                totals[key] = totals[key] + value if key in totals else value
                squares[key] = squares[key] + square if key in squares else square
        n_users += len(rows)
    result = {key: (float(totals[key]) / n_users if n_users else 0.0) for key in sums}
    if with_se:
        for key in sums:
            mean = result[key]
            variance = float(squares[key]) / n_users - mean * mean if n_users > 1 else 0.0
            result[f"{key}_se"] = float(np.sqrt(max(variance, 0.0) / max(n_users - 1, 1)))
    result["users"] = n_users
    return result
