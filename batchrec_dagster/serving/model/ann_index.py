"""The approximate top-k path of a served model: its index, verified or rebuilt, and its scorer.

A model with fewer repositories than the switch-over (`AnnOptions.min_items`,
BATCHREC_ANN_MIN_ITEMS) is scored exactly (`scoring.BatchScorer`): a full decoder pass is cheap
there. A larger one is answered from a maximum-inner-product index over its decoder rows
(recvae/ann.py). The index named by the registry entry (`ann_index`: file_name, size_bytes,
sha256, artifact_sha256) is read with `storage.blobs.read_verified` like the artifact, parsed by faiss
(never pickle) and checked against the model: the artifact it was built for, the number of
vectors and their dimension, and a sample of the stored vectors against the decoder rows. A
missing, truncated or mismatched index is rebuilt here from the model's own decoder, so the
server still answers approximately; `/model` says which path serves and why (`describe`).

The index lives inside the `LoadedModel` with the weights it was built from, so a hot swap (one
reference assignment) changes both together: no request pairs one model's code with another's
index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from batchrec_dagster.serving.model.local_copies import LocalCopies
from batchrec_dagster.serving.model.scoring import BatchScorer
from batchrec_dagster.storage.blobs import ArtifactMismatchError, BlobNotFoundError, BlobStore, read_verified
from recvae import ann

if TYPE_CHECKING:
    from batchrec_dagster.settings import Settings

log = logging.getLogger("batchrec.serving")

VERIFY_SAMPLE = 64  # stored vectors compared with the decoder rows before an index is used


@dataclass(frozen=True)
class AnnOptions:
    """How the server chooses and queries the approximate path (settings BATCHREC_ANN_*)."""

    min_items: int  # BATCHREC_ANN_MIN_ITEMS: the switch-over, no default here (settings.py has it)
    params: ann.IndexParams = ann.IndexParams()
    threads: int = 1  # faiss's OpenMP threads, as the worker's torch threads

    @classmethod
    def from_settings(cls, settings: Settings, threads: int = 1) -> AnnOptions:
        return cls(min_items=settings.ann_min_items, threads=threads,
                   params=ann.IndexParams(kind=settings.ann_index_kind, ef_search=settings.ann_ef_search,
                                          nprobe=settings.ann_nprobe))


class ApproxScorer:
    """`BatchScorer.recommend`'s contract answered from an index: the encoder gives z, the index
    the best inner products [z, 1] . [w_i, b_i]; own items excluded, k results (recvae.ann).
    Users with no known item get the popularity ranking, as the exact path gives them."""

    mode = "approximate"

    def __init__(self, exact: BatchScorer, index: Any):
        self.exact = exact
        self.index = index
        self.n_items = exact.n_items
        self.device = exact.device
        popularity = exact.popularity_scores.to("cpu").numpy()
        # torch.topk of equal scores has no defined order; a stable sort by score gives one
        self._popular = np.argsort(-popularity, kind="stable")
        self._popularity = popularity

    def recommend(self, users: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.n_items)
        size = len(users)
        out_idx = np.full((size, k), -1, dtype=np.int64)
        out_val = np.full((size, k), -np.inf, dtype=np.float32)
        known = [row for row, u in enumerate(users) if len(u)]
        for row in (r for r, u in enumerate(users) if not len(u)):
            out_idx[row] = self._popular[:k]
            out_val[row] = self._popularity[self._popular[:k]]
        if known and k:
            own = [np.asarray(users[row], dtype=np.int64) for row in known]
            z = self.exact.codes(own)
            idx, val = ann.search_excluding(self.index, ann.query_vectors(z), own, k,
                                            lambda row: self._exact_row(z[row], own[row], k))
            out_idx[known], out_val[known] = idx, val
        return out_idx, out_val

    def _exact_row(self, z: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-k of one user from the decoder's own weights (no copy of them)."""
        decoder = self.exact.model.decoder
        with torch.inference_mode():
            scores = decoder(torch.from_numpy(z).to(self.device)[None, :])[0]
            scores[torch.from_numpy(own).to(self.device)] = float("-inf")
            values, top = torch.topk(scores, min(k, self.n_items))
        keep = ~torch.isneginf(values)
        return top[keep].cpu().numpy().astype(np.int64), values[keep].cpu().numpy()


def _reject(reason: str) -> str:
    log.warning("approximate index: %s; rebuilding it from the model", reason)
    return reason


def _stored_index(record: Mapping[str, Any], entry: Mapping[str, Any], store: BlobStore,
                  vectors: np.ndarray, options: AnnOptions, copies: LocalCopies | None = None
                  ) -> tuple[Any | None, str]:
    """(the registry's index, "") when it is the recorded, matching one; else (None, why not)."""
    file_name = record.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        return None, _reject("the registry entry names no index file")
    if record.get("artifact_sha256") != entry.get("sha256"):
        return None, _reject(f"{file_name} was built for another artifact")
    try:
        if copies is not None:  # mapped from the local copy all workers share
            index = ann.read_index_file(copies.path(store, file_name, record, ".faiss"),
                                        n_items=vectors.shape[0], dim=vectors.shape[1])
        else:
            data = read_verified(store, file_name, size_bytes=record.get("size_bytes"),
                                 sha256=record.get("sha256"))
            index = ann.deserialize(data, n_items=vectors.shape[0], dim=vectors.shape[1])
    except BlobNotFoundError:
        return None, _reject(f"{file_name} is missing")
    except (ArtifactMismatchError, ann.IndexLoadError, ValueError) as exc:
        return None, _reject(f"{file_name}: {exc}")
    except Exception as exc:  # network, permissions: this poll rebuilds rather than not serving
        return None, _reject(f"{file_name} could not be read: {type(exc).__name__}: {exc}")
    problem = mismatched_vectors(index, vectors)
    if problem:
        return None, _reject(f"{file_name}: {problem}")
    # at least the beam (HNSW), the lists (IVF) and the re-ranked candidates (ivfpq) the recall
    # was measured with at registration (defs/assets/ann_index.py)
    knobs = ("ef_search", "nprobe", "refine")
    recorded = {name: record.get(name) if isinstance(record.get(name), int) else 0 for name in knobs}
    ann.set_search_params(index, replace(
        options.params, **{name: max(getattr(options.params, name), recorded[name]) for name in knobs}))
    return index, ""


def mismatched_vectors(index: Any, vectors: np.ndarray) -> str:
    """Why the index does not hold these decoder rows ("" when a sample of them matches)."""
    rng = np.random.default_rng(0)
    sample = rng.choice(len(vectors), min(VERIFY_SAMPLE, len(vectors)), replace=False)
    try:
        stored = ann.stored_vectors(index, sample)
    except ann.IndexLoadError as exc:
        return str(exc)
    except RuntimeError as exc:
        return f"its vectors cannot be read back: {exc}"
    if not np.allclose(stored, vectors[sample], rtol=1e-5, atol=1e-6):
        return "its vectors are not this model's decoder rows"
    return ""


def attach_index(scorer: BatchScorer, entry: Mapping[str, Any], store: BlobStore,
                 options: AnnOptions | None, copies: LocalCopies | None = None
                 ) -> tuple[BatchScorer | ApproxScorer, dict[str, Any]]:
    """The scorer to serve with, and what `/model` says about its path."""
    n = scorer.n_items
    if options is None or n < options.min_items:
        reason = ("approximate serving is off" if options is None else
                  f"{n} repositories, below the switch-over of {options.min_items}")
        return scorer, {"path": "exact", "reason": reason}
    import faiss

    faiss.omp_set_num_threads(options.threads)
    record = entry.get("ann_index") if isinstance(entry.get("ann_index"), Mapping) else None
    vectors = ann.decoder_vectors(scorer.model)
    index, why = (_stored_index(record, entry, store, vectors, options, copies) if record is not None
                  else (None, _reject("the registry entry has no index")))
    status: dict[str, Any] = {"path": "approximate"}
    if index is None:
        started = time.perf_counter()
        index = ann.build_index(vectors, options.params)
        status.update(source="rebuilt", reason=why, kind=ann.index_kind(index),
                      build_seconds=round(time.perf_counter() - started, 3))
    else:
        status.update(source="registry", file_name=record["file_name"], kind=ann.index_kind(index),
                      recall=record.get("recall"), recall_k=record.get("recall_k"))
        status.update(ann.search_knobs(index))
    return ApproxScorer(scorer, index), status
