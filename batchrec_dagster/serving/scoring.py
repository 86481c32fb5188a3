"""Top-k for request batches, with the semantics of `recvae.Recommender.recommend` at less cost.

`Recommender.recommend` goes through SciPy CSR matrices, toggles the model's train/eval mode and
builds a dense [batch, n_items] mask to exclude each user's items; per call that costs about as
much again as the forward pass at 5,000 items (0.5 ms), and 7 ms for 16 users at 50,000 items.
Here the batch goes straight into the model's sparse input layout, the user's own items are
set to -inf in place, and users with no known item get the popularity ranking, exactly as
`Recommender` defines it (log1p of the item popularity). tests/serving/test_scoring.py checks
that both give the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recvae import Recommender
from recvae.sparse import SparseBatch


class BatchScorer:
    def __init__(self, recommender: Recommender):
        self.model = recommender.model.eval()
        self.device = recommender.device
        self.n_items = recommender.n_items
        self.popularity_scores = torch.log1p(
            torch.from_numpy(np.asarray(recommender.item_popularity, dtype=np.float32)).clamp_min(0)
        ).to(self.device)

    def recommend(self, users: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k column indices [B, min(k, n_items)] int64 and scores float32 per user.

        `users` are arrays of known, distinct column indices (the caller drops unknown ids and
        duplicates). Padding is -1 / -inf where a user has fewer than k other items.
        """
        k = min(k, self.n_items)
        size = len(users)
        lengths = np.fromiter((len(u) for u in users), dtype=np.int64, count=size)
        flat = (np.concatenate(users).astype(np.int64, copy=False) if lengths.sum()
                else np.zeros(0, dtype=np.int64))
        if flat.size and (flat.min() < 0 or flat.max() >= self.n_items):
            raise ValueError(f"column indices must be in [0, {self.n_items})")
        offsets = np.zeros(size, dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        rows = torch.from_numpy(np.repeat(np.arange(size, dtype=np.int64), lengths)).to(self.device)
        indices = torch.from_numpy(flat).to(self.device)
        batch = SparseBatch(indices=indices, offsets=torch.from_numpy(offsets).to(self.device),
                            rows=rows, values=torch.ones(flat.size, device=self.device),
                            counts=torch.from_numpy(lengths.astype(np.float32)).to(self.device),
                            size=size)
        with torch.inference_mode():
            scores = self.model(batch)
            empty = lengths == 0
            if empty.any():
                scores[torch.from_numpy(empty).to(self.device)] = self.popularity_scores
            scores[rows, indices] = float("-inf")
            values, top = torch.topk(scores, k, dim=1)
            top = top.masked_fill(torch.isneginf(values), -1)
        return top.cpu().numpy(), values.cpu().numpy()
