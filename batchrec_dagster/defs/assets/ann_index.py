"""The model's approximate top-k index, built when the model is trained (recvae_model).

Built from the trained decoder (recvae/ann.py), its recall@k against exact scoring measured on
the held-out test users (the server's exclusion of their own items included), and written
write-once next to the artifact as `<artifact>.faiss` with its size and sha256, as the artifact
is. The record goes into `TrainedModel.ann_index` and from there into the registry entry, where
the server finds, verifies (or rebuilds) it (serving/model/ann_index.py). A catalog below the
switch-over (BATCHREC_ANN_MIN_ITEMS) is served exactly and gets no index.
"""

from __future__ import annotations

from typing import Any

import scipy.sparse as sp
import torch

from batchrec_dagster.storage.blobs import BlobStore, StoredBlob
from recvae import ann

INDEX_SUFFIX = ".faiss"


def build_and_store(model: torch.nn.Module, artifact: StoredBlob, store: BlobStore, held_out: sp.csr_matrix,
                    *, params: ann.IndexParams, min_items: int, recall_k: int,
                    min_recall: float = 0.0) -> dict[str, Any] | None:
    """The index record for the registry entry, or None below the switch-over (exact serving).
    An index whose recall is below `min_recall` is measured again with wider search knobs
    (`IndexParams.wider`: HNSW's beam, IVF's probes, then ivfpq's re-ranking) until it reaches the
    floor or they are at their widest. The record keeps the knobs of the last measurement, and
    servers search with at least those."""
    n_items = int(model.decoder.weight.shape[0])
    if n_items < min_items:
        return None
    params = params.resolved(n_items)  # `auto`: the kind for this catalog (recvae.ann.IVF_MIN_ITEMS)
    built = ann.build_for_model(model, params)
    recall = ann.measure_recall(model, built.data, held_out, k=recall_k, params=params)
    wider = params.wider()
    while recall["recall"] is not None and recall["recall"] < min_recall and wider is not None:
        params, wider = wider, wider.wider()
        recall = ann.measure_recall(model, built.data, held_out, k=recall_k, params=params)
    stored = store.put_new(f"{artifact.name}{INDEX_SUFFIX}", built.data)
    knobs = {"ef_search": params.ef_search, "nprobe": params.nprobe, "refine": params.refine}
    return {**built.to_dict(), **knobs,
            "file_name": stored.name, "uri": stored.uri, "sha256": stored.sha256,
            "size_bytes": stored.size_bytes, "artifact_sha256": artifact.sha256,
            "recall": recall["recall"], "recall_k": recall["k"], "recall_users": recall["users"]}


def index_metadata(record: dict[str, Any] | None, min_items: int | None = None) -> dict[str, Any]:
    """What the assets' metadata say about the index (or that the catalog is served exactly)."""
    if record is None:
        return {"serving_path": "exact" + (f" (fewer than {min_items} repositories)" if min_items else "")}
    recall = record["recall"] if record["recall"] is not None else -1.0  # -1: no user to measure on
    return {"serving_path": f"approximate ({record['kind']})",
            f"ann_recall@{record['recall_k']}": float(recall),
            "ann_recall_users": record["recall_users"],
            "ann_build_seconds": record["build_seconds"],
            "ann_index_bytes": record["size_bytes"],
            "ann_index_file_name": record["file_name"],
            "ann_index_sha256": record["sha256"]}
