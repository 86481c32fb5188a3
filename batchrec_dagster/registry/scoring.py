"""Comparable scores: every candidate model scored on the same evaluation window.

The window (sources/evaluation_window.py) holds users x repositories in the window's own vocabulary. For each
model, the users' earlier stars are fed in through the model's vocabulary (repositories it does
not know are dropped from the input) and the window's new stars are the held-out items; held-out
repositories the model does not know stay in the count (`n_relevant`), so they are misses. Every
model is therefore scored on the same users and the same held-out stars: a model that cannot
recommend new repositories loses on them. `score` = NDCG@100, as everywhere in batchrec.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from batchrec_dagster.registry.defaults import SCORE_METRIC
from batchrec_dagster.sources.evaluation_window import EvaluationWindow
from batchrec_dagster.storage.blobs import ArtifactMismatchError, BlobNotFoundError, BlobStore, read_verified
from recvae import ArtifactError, Popularity, Recommender, evaluate, load_artifact


def _remap(matrix: sp.csr_matrix, columns: np.ndarray, n_items: int) -> sp.csr_matrix:
    """`matrix` with column j moved to columns[j]; columns of -1 (unknown to the model) dropped."""
    coo = matrix.tocoo()
    new = columns[coo.col]
    keep = new >= 0
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], new[keep])), shape=(matrix.shape[0], n_items))


def score_on_window(recommender: Recommender, window: EvaluationWindow) -> dict[str, Any]:
    """The model's metrics on the window, plus how many held-out stars it could not know."""
    columns = recommender.index_of(window.repo_ids)
    fold_in = _remap(window.fold_in, columns, recommender.n_items)
    target = _remap(window.target, columns, recommender.n_items)
    n_relevant = np.diff(window.target.indptr)
    metrics = {k: float(v) for k, v in evaluate(recommender, fold_in, target, n_relevant=n_relevant).items()}
    return {
        "score": metrics[SCORE_METRIC],
        "metrics": metrics,
        "targets": int(window.target.nnz),
        "unknown_targets": int(window.target.nnz - target.nnz),
        "fold_in_unknown": int(window.fold_in.nnz - fold_in.nnz),
    }


class _PopularityOf:
    """The popularity ranking of a model's training stars, with the model's vocabulary."""

    def __init__(self, recommender: Recommender) -> None:
        self.n_items = recommender.n_items
        self.index_of = recommender.index_of
        self._popularity = Popularity()
        self._popularity.popularity = np.asarray(recommender.item_popularity)

    def score(self, fold_in: sp.csr_matrix) -> Any:
        return self._popularity.score(fold_in)


def popularity_on_window(recommender: Recommender, window: EvaluationWindow) -> dict[str, Any]:
    """Popularity as known to `recommender` (its training stars) on the same window: how hard the
    window is, independently of any learned model."""
    return score_on_window(_PopularityOf(recommender), window)  # type: ignore[arg-type]


def evaluate_entry(store: BlobStore, entry: dict[str, Any], window: EvaluationWindow
                   ) -> tuple[dict[str, Any], Recommender | None]:
    """Read the entry's artifact (size and sha256 checked against the registry), load it without
    unpickling and score it. A failure is returned as `problem`, never raised: one bad artifact
    must not stop the other candidates from being compared."""
    try:
        name = entry.get("file_name")
        if not isinstance(name, str) or not name:
            raise ValueError("the registry entry has no file_name")
        data = read_verified(store, name, size_bytes=entry.get("size_bytes"), sha256=entry.get("sha256"))
        recommender = load_artifact(data, device="cpu").recommender
    except (BlobNotFoundError, ArtifactMismatchError, ArtifactError, ValueError) as exc:
        # the artifact is missing or not what was registered: this model cannot serve. Other
        # errors (network, permissions) may pass; they fail the run rather than dethrone a model.
        return {"score": None, "problem": f"{type(exc).__name__}: {exc}"}, None
    return {**score_on_window(recommender, window), "problem": None}, recommender
