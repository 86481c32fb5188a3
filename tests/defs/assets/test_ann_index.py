"""The top-k index recvae_model stores: write-once next to the artifact, its recall measured, and
the query beam widened until the recall reaches the floor (real faiss, a real local store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrec_dagster.defs.assets.ann_index import build_and_store
from batchrec_dagster.storage.blobs import BlobExistsError, LocalBlobStore, sha256_hex
from recvae import RecVAE, RecVAEConfig, Split, ann

ITEMS = 400


@pytest.fixture(scope="module")
def held_out() -> Split:
    from recvae import split_users
    from recvae.datasets import power_law_interactions

    return split_users(power_law_interactions(300, ITEMS, 6000, seed=5), n_validation=20, n_test=80, seed=1)


def test_the_beam_is_widened_until_the_recall_reaches_the_floor(tmp_path: Path, held_out: Split) -> None:
    store = LocalBlobStore(tmp_path)
    model = RecVAE(held_out.train.shape[1], RecVAEConfig(hidden_dim=32, latent_dim=16, seed=2))
    artifact = store.put_new("recvae_x.pt", b"the artifact")
    narrow = ann.IndexParams("hnsw", hnsw_m=4, ef_construction=8, ef_search=1)
    fold_in = held_out.test.fold_in
    # with the narrowest beam (faiss searches at least k wide) the index misses part of the top-20
    first = ann.measure_recall(model, ann.build_for_model(model, narrow).data, fold_in, k=20, params=narrow)
    assert first["recall"] < 1.0
    record = build_and_store(model, artifact, store, fold_in, params=narrow, min_items=10, recall_k=20,
                             min_recall=1.0)
    assert record is not None and record["ef_search"] > 1 and record["recall"] > first["recall"]
    data = store.read(record["file_name"])
    assert record["file_name"] == "recvae_x.pt.faiss" and sha256_hex(data) == record["sha256"]
    assert record["artifact_sha256"] == artifact.sha256 and record["recall_users"] == fold_in.shape[0]
    with pytest.raises(BlobExistsError):  # write-once, as the artifact
        build_and_store(model, artifact, store, fold_in, params=narrow, min_items=10, recall_k=20)
    # below the switch-over: no index, served exactly
    assert build_and_store(model, artifact, store, fold_in, params=narrow, min_items=ITEMS + 1,
                           recall_k=20) is None


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_ivf_probes_are_widened_until_the_recall_reaches_the_floor(tmp_path: Path, held_out: Split,
                                                                   kind: str) -> None:
    store = LocalBlobStore(tmp_path)
    model = RecVAE(held_out.train.shape[1], RecVAEConfig(hidden_dim=32, latent_dim=16, seed=2))
    artifact = store.put_new("recvae_x.pt", b"the artifact")
    narrow = ann.IndexParams(kind, nlist=16, nprobe=1, refine=1)
    fold_in = held_out.test.fold_in
    first = ann.measure_recall(model, ann.build_for_model(model, narrow).data, fold_in, k=20, params=narrow)
    assert first["recall"] < 1.0  # one list of sixteen misses part of the top-20
    record = build_and_store(model, artifact, store, fold_in, params=narrow, min_items=10, recall_k=20,
                             min_recall=1.0)
    assert record is not None and record["kind"] == kind and record["recall"] > first["recall"]
    assert record["nprobe"] > 1 and record["nprobe"] <= 16
    # the recorded knobs are the ones measured: the same recall when measured with them
    knobs = ann.IndexParams(kind, nlist=16, nprobe=record["nprobe"], refine=record["refine"])
    again = ann.measure_recall(model, store.read(record["file_name"]), fold_in, k=20, params=knobs)
    assert again["recall"] == record["recall"]
