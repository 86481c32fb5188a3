"""Top-k recommendation from a trained RecVAE by fold-in: any user given as a set of items works."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recvae.data import normalize_ids
from recvae.device import resolve_device
from recvae.metrics import csr_to_dense_mask
from recvae.model import RecVAE
from recvae.sparse import SparseBatch


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_with_model(model: RecVAE, fold_in: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """Decoder logits from the posterior mean (no sampling, no dropout) for CSR rows."""
    was_training = model.training
    model.eval()
    try:
        return model(SparseBatch.from_csr(fold_in, device))
    finally:
        model.train(was_training)


def lists_to_csr(users: Sequence[Sequence[int]], n_items: int) -> sp.csr_matrix:
    """Binary CSR from per-user column-index lists; -1 entries (unknown items) are ignored."""
    lengths = np.fromiter((len(u) for u in users), dtype=np.int64, count=len(users))
    flat = (
        np.concatenate([np.asarray(u, dtype=np.int64).reshape(-1) for u in users])
        if lengths.sum()
        else np.zeros(0, dtype=np.int64)
    )
    if ((flat < -1) | (flat >= n_items)).any():
        raise ValueError(f"item indices must be in [0, {n_items}) (or -1 for unknown)")
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    known = flat >= 0
    matrix = sp.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.float32), (rows[known], flat[known])),
        shape=(len(users), n_items),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


class Recommender:
    """A trained RecVAE in eval mode plus its item vocabulary; implements `Scorer`."""

    def __init__(
        self,
        model: RecVAE,
        item_ids: np.ndarray,
        item_popularity: np.ndarray,
        device: str | None = None,
    ) -> None:
        self.item_ids = normalize_ids(item_ids)
        self.item_popularity = np.asarray(item_popularity, dtype=np.float32)
        self.n_items = int(model.n_items)
        if len(self.item_ids) != self.n_items or len(self.item_popularity) != self.n_items:
            raise ValueError(
                f"model has {self.n_items} items but item_ids has {len(self.item_ids)} and "
                f"item_popularity {len(self.item_popularity)}"
            )
        self.device = resolve_device(device) if device is not None else model_device(model)
        self.model = model.to(self.device).eval()
        # log1p keeps popularity scores finite and in a range comparable to logits.
        self._popularity_scores = torch.log1p(torch.from_numpy(self.item_popularity).clamp_min(0)).to(
            self.device
        )
        self._id_order = np.argsort(self.item_ids, kind="stable")
        self._sorted_ids = self.item_ids[self._id_order]

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        """[B, n_items] float32 on the device. Users with no items get log(1 + popularity)."""
        fold_in = sp.csr_matrix(fold_in)
        if fold_in.shape[1] != self.n_items:
            raise ValueError(f"fold_in has {fold_in.shape[1]} columns, model has {self.n_items}")
        scores = score_with_model(self.model, fold_in, self.device)
        empty = torch.from_numpy(np.diff(fold_in.indptr) == 0).to(self.device)
        return torch.where(empty[:, None], self._popularity_scores[None, :], scores)

    def recommend(
        self, users: Sequence[Sequence[int]] | sp.csr_matrix, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k column indices [B, min(k, n_items)] int64 and their scores float32.

        Each user's own items are never recommended. A user with fewer than k other items gets
        the remaining slots padded with index -1 and score -inf. In list input, -1 entries (as
        returned by `index_of` for unknown ids) are ignored; other out-of-range indices raise.
        """
        if k < 0:
            raise ValueError("k must be >= 0")
        matrix = users if sp.issparse(users) else lists_to_csr(users, self.n_items)
        matrix = sp.csr_matrix(matrix)
        k = min(k, self.n_items)
        if matrix.shape[0] == 0 or k == 0:
            return np.zeros((matrix.shape[0], k), np.int64), np.zeros((matrix.shape[0], k), np.float32)
        scores = self.score(matrix)
        scores = scores.masked_fill(csr_to_dense_mask(matrix, self.device), float("-inf"))
        top = torch.topk(scores, k, dim=1)
        values, indices = top.values, top.indices
        indices = indices.masked_fill(torch.isneginf(values), -1)
        return indices.cpu().numpy().astype(np.int64), values.cpu().numpy().astype(np.float32)

    def index_of(self, item_ids: Sequence | np.ndarray) -> np.ndarray:
        """Column index of each original item id, -1 where the id is not in the vocabulary."""
        query = np.asarray(item_ids)
        try:
            query = normalize_ids(query)
            if query.dtype.kind != self._sorted_ids.dtype.kind:
                query = query.astype(self._sorted_ids.dtype)
        except (ValueError, TypeError, OverflowError):
            return np.full(query.shape, -1, dtype=np.int64)
        if len(self._sorted_ids) == 0:
            return np.full(query.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, query).clip(0, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == query
        return np.where(found, self._id_order[pos], -1).astype(np.int64)
