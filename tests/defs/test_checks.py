"""Blocking checks: the rules themselves, and that a failing one keeps the model out of the registry."""
# no `from __future__ import annotations`: Dagster reads the stand-in assets' context annotation.

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import scipy.sparse as sp

from batchrec_dagster.defs.checks import (
    baseline_margin,
    build_checks,
    leakage_problems,
    matrix_problems,
)
from batchrec_dagster.defs.partitions import hourly_partitions
from batchrec_dagster.defs.resources import LocalArtifactStore, RunDefaults
from batchrec_dagster.settings import load_settings
from batchrec_dagster.storage.blobs import (
    ArtifactMismatchError,
    LocalBlobStore,
    mismatches,
    read_verified,
    sha256_hex,
)
from batchrec_dagster.storage.values import TrainedModel, UserItemMatrix, VaeInput

BOUNDS = {"min_users": 3, "min_items": 3, "max_items": 1000, "max_density": 0.5}
SETTINGS = load_settings({})  # the defaults: a recall floor of 0.98, a margin of 0
PARTITIONS = hourly_partitions(SETTINGS)
PARTITION = "2026-03-01-14:00"


def matrix(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    data = [(u, i) for u, items in enumerate(rows) for i in items]
    users, items = zip(*data, strict=True) if data else ((), ())
    return sp.csr_matrix((np.ones(len(data), np.float32), (users, items)), shape=(len(rows), n_items))


def good_matrix() -> UserItemMatrix:
    m = matrix([[0, 1], [2, 3], [4, 5], [6, 7], [0, 8]], 10)
    return UserItemMatrix(m, np.arange(5, dtype=np.int64) + 100, np.arange(10, dtype=np.int64) + 1000)


def test_matrix_rules() -> None:
    assert matrix_problems(good_matrix(), **BOUNDS) == []

    empty = UserItemMatrix(sp.csr_matrix((0, 0), dtype=np.float32), np.zeros(0, np.int64),
                           np.zeros(0, np.int64))
    problems = matrix_problems(empty, **BOUNDS)
    assert "the matrix has no interactions" in problems and any("fewer than the minimum 3" in p
                                                                for p in problems)

    weighted = good_matrix()
    weighted.matrix.data[0] = 2.0
    assert matrix_problems(weighted, **BOUNDS) == ["the matrix is not binary"]

    dense = UserItemMatrix(sp.csr_matrix(np.ones((4, 4), np.float32)), np.arange(4), np.arange(4))
    assert any(p.startswith("density 1.000 exceeds") for p in matrix_problems(dense, **BOUNDS))

    duplicated_ids = good_matrix()
    duplicated_ids.item_ids[1] = duplicated_ids.item_ids[0]
    assert matrix_problems(duplicated_ids, **BOUNDS) == ["item_ids: ids are not unique"]

    assert any("more than the maximum 5" in p
               for p in matrix_problems(good_matrix(), **{**BOUNDS, "max_items": 5}))


def vae_input(**changes) -> VaeInput:
    value = VaeInput(
        train=matrix([[0, 1, 2], [1, 2, 3], [2, 3, 4]], 6),
        train_user_ids=np.array([1, 2, 3]),
        item_ids=np.arange(6),
        validation_user_ids=np.array([7, 8]),
        validation_fold_in=matrix([[0, 1], [2, 3]], 6),
        validation_target=matrix([[4], [5]], 6),
    )
    for name, new in changes.items():
        setattr(value, name, new)
    return value


def test_leakage_rules() -> None:
    assert leakage_problems(vae_input()) == []
    assert leakage_problems(vae_input(validation_user_ids=np.array([3, 8]))) == [
        "1 users are both training and validation users (e.g. [3])"]
    assert leakage_problems(vae_input(validation_target=matrix([[1], [5]], 6))) == [
        "1 held-out (user, item) pairs are both folded in and scored"]
    assert leakage_problems(vae_input(validation_target=matrix([[], []], 6))) == [
        "no validation user has a held-out item to score"]
    wrong_shape = vae_input(validation_target=matrix([[1]], 6))
    assert any("expected (2, 6)" in p for p in leakage_problems(wrong_shape))
    with_test = {"test_user_ids": np.array([9]), "test_fold_in": matrix([[0, 1]], 6),
                 "test_target": matrix([[2]], 6)}
    assert leakage_problems(vae_input(**with_test)) == []
    assert leakage_problems(vae_input(**{**with_test, "test_user_ids": np.array([8])})) == [
        "1 users are both validation and test users (e.g. [8])"]
    assert leakage_problems(vae_input(**{**with_test, "test_target": matrix([[1]], 6)})) == [
        "test users have items both folded in and scored"]


def trained_model(store: LocalBlobStore, *, score: float = 0.30, popularity: float = 0.10,
                  tamper: bool = False, index_recall: float | None = None) -> TrainedModel:
    from recvae import Recommender, RecVAE, RecVAEConfig, dump_artifact

    config = RecVAEConfig(hidden_dim=8, latent_dim=4)
    data = dump_artifact(Recommender(RecVAE(6, config), np.arange(6, dtype=np.int64),
                                     np.ones(6, np.float32)), config=config, metrics={})
    blob = store.put_new(f"recvae_test_{score}_{tamper}.pt", data)
    return TrainedModel(
        file_name=blob.name, bucket=store.location, uri=blob.uri, size_bytes=blob.size_bytes,
        sha256=("f" * 64) if tamper else blob.sha256, score=score,
        metrics={"ndcg@100": score, "users": 50}, popularity_metrics={"ndcg@100": popularity, "users": 50},
        config=config.to_dict(), history=[], data_sizes={}, training_seconds=1.0, epochs=1,
        # the record recvae_model writes with an approximate top-k index (defs/assets/ann_index.py)
        ann_index=None if index_recall is None else {"kind": "hnsw", "recall": index_recall,
                                                     "recall_k": 20, "recall_users": 50})


def test_baseline_and_artifact_rules(local_store: LocalBlobStore) -> None:
    model = trained_model(local_store)
    assert baseline_margin(model) == (0.30, 0.10, [])
    model.popularity_metrics["users"] = 49
    assert baseline_margin(model)[2] == [
        "model scored on 50 users, popularity on 49: not the same held-out users"]

    data = local_store.read(model.file_name)
    recorded = {"size_bytes": model.size_bytes, "sha256": model.sha256}
    assert mismatches(data, **recorded) == []
    assert mismatches(data[:-1], **recorded)[0] == f"size {len(data) - 1} bytes, recorded {len(data)}"
    flipped = bytes([data[0] ^ 1]) + data[1:]
    assert mismatches(flipped, **recorded) == [f"sha256 {sha256_hex(flipped)}, recorded {model.sha256}"]
    assert read_verified(local_store, model.file_name, **recorded) == data
    with pytest.raises(ArtifactMismatchError, match="size"):
        read_verified(local_store, model.file_name, size_bytes=model.size_bytes + 1, sha256=model.sha256)


def _run_model_checks(tmp_path: Path, model: TrainedModel, run_config: dict | None = None):
    """Real checks on a stand-in `recvae_model`; `model_registry_entry` records whether it ran."""
    registered: list[str] = []

    @dg.asset(name="recvae_model", partitions_def=PARTITIONS)
    def recvae_model() -> TrainedModel:
        return model

    @dg.asset(name="model_registry_entry", partitions_def=PARTITIONS, deps=["recvae_model"])
    def model_registry_entry(context: dg.AssetExecutionContext) -> None:
        registered.append(context.partition_key)

    model_checks = [c for c in build_checks(PARTITIONS)
                    if dg.AssetKey("recvae_model") in {k.asset_key for k in c.check_keys}]
    assert all(c.partitions_def == PARTITIONS for c in model_checks)  # each checks one hour
    result = dg.materialize(
        [recvae_model, model_registry_entry, *model_checks], partition_key=PARTITION, raise_on_error=False,
        resources={"io_manager": dg.InMemoryIOManager(),
                   "artifact_store": LocalArtifactStore(root=str(tmp_path / "store")),
                   "run_defaults": RunDefaults.from_settings(SETTINGS)},
        run_config=run_config)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    return result, evaluations, registered


def test_passing_checks_let_the_model_be_registered(tmp_path: Path) -> None:
    model = trained_model(LocalBlobStore(tmp_path / "store"))
    result, evaluations, registered = _run_model_checks(tmp_path, model)
    assert result.success
    assert {name: e.passed for name, e in evaluations.items()} == {
        "recvae_model_beats_popularity": True, "recvae_model_artifact_verifies": True,
        "recvae_model_index_recall": True}
    assert evaluations["recvae_model_beats_popularity"].metadata["partition"].value == PARTITION
    # partitioned checks: Dagster records each evaluation on the hour it checked
    assert {e.partition for e in evaluations.values()} == {PARTITION}
    assert registered == [PARTITION]


def test_an_index_at_the_recall_floor_passes(tmp_path: Path) -> None:
    model = trained_model(LocalBlobStore(tmp_path / "store"), index_recall=0.98)
    result, evaluations, registered = _run_model_checks(tmp_path, model)
    assert result.success and evaluations["recvae_model_index_recall"].passed
    assert evaluations["recvae_model_index_recall"].metadata["recall"].value == 0.98
    assert registered == [PARTITION]


@pytest.mark.parametrize("case", ["tampered artifact", "below the margin", "index below the recall floor"])
def test_a_failing_blocking_check_prevents_registration(tmp_path: Path, case: str) -> None:
    store = LocalBlobStore(tmp_path / "store")
    if case == "tampered artifact":
        model, run_config, failing = trained_model(store, tamper=True), None, "recvae_model_artifact_verifies"
    elif case == "index below the recall floor":  # the default floor is 0.98 at k=20
        model, run_config = trained_model(store, index_recall=0.97), None
        failing = "recvae_model_index_recall"
    else:
        # beats popularity by 0.2, the configured margin wants more than 0.25
        model, failing = trained_model(store), "recvae_model_beats_popularity"
        run_config = {"ops": {"recvae_model_recvae_model_beats_popularity": {"config": {"min_margin": 0.25}}}}
    result, evaluations, registered = _run_model_checks(tmp_path, model, run_config)
    assert not result.success
    assert evaluations[failing].passed is False
    assert evaluations[failing].severity == dg.AssetCheckSeverity.ERROR
    assert registered == []  # the registry step never ran
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [dg.AssetKey("recvae_model")]
