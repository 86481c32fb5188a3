"""The five assets end to end, in-process, against real MongoDB and real storage (folder or GCS)."""

import math
from datetime import timedelta

import dagster as dg
import numpy as np
import pytest

from batchrec_dagster.cli.materialize import materialize_partition
from batchrec_dagster.defs.assets.metadata import rounded
from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.registry.models import entries_for_partition
from batchrec_dagster.settings import Settings, load_settings
from batchrec_dagster.sources.demo_data import generate_demo, load_demo
from batchrec_dagster.storage.blobs import sha256_hex
from batchrec_dagster.storage.codec import decode
from recvae import load_artifact
from tests.harness.deployments import TINY_DEMO, tiny_run_config

KEY = "2026-03-01-20:00"           # Asia/Seoul: the UTC hour [11:00, 12:00) on 2026-03-01
START, END = partition_window(KEY)
DEMO_END = END + timedelta(hours=12)  # some demo stars fall after the partition


def load_tiny_demo(db) -> int:
    """Demo data plus malformed documents; returns how many valid stars the partition must see."""
    load_demo(db, TINY_DEMO, end=DEMO_END)
    db.repositories.insert_many([{"_id": "bad", "full_name": "x/y", "stars": 50},
                                 {"_id": 1, "full_name": "x/no-stars-field"}])
    db.stars.insert_many([{"user_id": 1, "repo_id": 999_999, "starred_at": START},
                          {"user_id": "someone", "repo_id": 10_000_000, "starred_at": START},
                          {"user_id": 2, "repo_id": 10_000_000, "starred_at": "last tuesday"}])
    data = generate_demo(TINY_DEMO, DEMO_END)
    return int((data.starred_at < np.datetime64(END.replace(tzinfo=None), "us")).sum())


def materialization(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey(asset):
            return event.materialization.metadata
    raise AssertionError(f"{asset} was not materialized")


def check_dagit_metadata(result) -> None:
    """Issue 18: every float of every asset's metadata rounded to 4 significant digits (Dagit showed
    16); the learning curve as a table, a chart and per-epoch values to plot."""
    floats = [(str(event.asset_key), key, value.value)
              for event in result.get_asset_materialization_events()
              for key, value in event.materialization.metadata.items()
              if isinstance(value, dg.FloatMetadataValue) and math.isfinite(value.value)]
    assert len(floats) >= 10 and any(value != round(value) for _, _, value in floats)
    unrounded = [f for f in floats if f[2] != float(f"{f[2]:.4g}")]
    assert not unrounded, unrounded
    model_meta = materialization(result, "recvae_model")
    epochs = model_meta["epochs"].value
    curve = model_meta["learning_curve_values"].value
    assert curve["epoch"] == list(range(curve["epoch"][0], curve["epoch"][0] + epochs))
    for measure in ("seconds", "loss", "ndcg@100", "recall@20", "recall@50"):
        assert len(curve[measure]) == epochs and all(isinstance(v, float) for v in curve[measure]), measure
    assert curve["best_epoch"] == model_meta["best_epoch"].value
    chart = model_meta["learning_curve_chart"].value
    assert all(f"\n{m} " in chart for m in ("loss", "ndcg@100", "recall@20", "recall@50")), chart
    assert sum(chart.count(bar) for bar in "▁▂▃▄▅▆▇█") >= 4 * epochs, chart
    assert model_meta["learning_curve"].value.count("\n") == epochs + 1  # the table: header, rule, epochs


def test_the_artifact_store_kind_follows_the_deployment():
    """Issue 18: recvae_model showed "gcs" in the local deployment."""
    local = load_settings({"BATCHREC_DEPLOYMENT": "local"})
    prod = load_settings({"BATCHREC_DEPLOYMENT": "prod", "MONGODB_URI": "mongodb://db", "GCS_BUCKET": "b"})
    for settings, store in ((local, "filesystem"), (prod, "gcs")):
        defs = build_definitions(settings)
        kinds = {name: defs.resolve_assets_def(name).specs_by_key[dg.AssetKey(name)].kinds
                 for name in ("recvae_model", "model_evaluation", "raw_repositories")}
        assert kinds == {"recvae_model": {"pytorch", store},
                         "model_evaluation": {"pytorch", "mongodb", store},
                         "raw_repositories": {"mongodb", "numpy"}}, settings.deployment


def check_run(result, db, expected_stars: int, read_asset, read_artifact) -> dict:
    assert result.success
    # partition H sees every star before its end and none after
    raw = decode(read_asset("raw_repositories"))
    assert len(raw.star_user_ids) == expected_stars
    assert raw.starred_at.max() < np.datetime64(END.replace(tzinfo=None), "us")
    raw_meta = materialization(result, "raw_repositories")
    assert raw_meta["skipped_repository_bad_id"].value == 1
    assert raw_meta["skipped_repository_bad_stars"].value == 1
    assert raw_meta["skipped_star_unknown_repo"].value == 1
    assert raw_meta["skipped_star_bad_user_id"].value == 1
    assert raw_meta["skipped_star_bad_starred_at"].value == 1
    assert raw_meta["window_end"].value == END.timestamp()
    demo_stars = len(generate_demo(TINY_DEMO, DEMO_END).star_user_ids)
    assert raw_meta["stars_after_window"].value == demo_stars - expected_stars > 0

    matrix_meta = materialization(result, "user_item_matrix")
    assert matrix_meta["users"].value > 200 and 0 < matrix_meta["density"].value < 1
    model_meta = materialization(result, "recvae_model")
    for key in ("score", "recall@20", "recall@50", "popularity_score", "training_seconds", "epochs"):
        assert isinstance(model_meta[key].value, int | float), key
    assert "demo-" in model_meta["top_repositories_preview"].value
    check_dagit_metadata(result)

    # the registry entry points at the artifact, whose bytes match its checksum
    entries = entries_for_partition(db, END)
    assert [e["run_id"] for e in entries] == [result.run_id]
    entry = entries[0]
    assert entry["partition_key"] == KEY and entry["data_start"] == START and entry["data_end"] == END
    assert entry["file_name"].startswith(f"recvae_{entry['score']:.4f}_")
    assert entry["file_name"].endswith(".pt")
    assert entry["score"] == entry["metrics"]["ndcg@100"] > entry["popularity_metrics"]["ndcg@100"]
    # score: the test users' NDCG@100; the validation users (who picked the epoch) keep their own field
    validation = entry["validation_score"]
    assert validation == entry["validation_metrics"]["ndcg@100"]
    assert model_meta["validation_score"].value == rounded(validation) == pytest.approx(validation, rel=1e-3)
    sizes = entry["data_sizes"]
    assert entry["metrics"]["users"] == entry["popularity_metrics"]["users"] == sizes["test_users"] > 0
    assert entry["validation_metrics"]["users"] == sizes["validation_users"] > 0
    assert entry["data_sizes"]["users"] == matrix_meta["users"].value
    assert entry["created_at"].tzinfo is not None and entry["code_version"]
    data = read_artifact(entry["file_name"])
    assert sha256_hex(data) == entry["sha256"] and len(data) == entry["size_bytes"]
    artifact = load_artifact(data)
    assert artifact.extra["run_id"] == result.run_id and artifact.extra["partition_key"] == KEY
    assert artifact.extra["data_end"] == END.isoformat()
    assert len(artifact.extra["item_names"]) == artifact.recommender.n_items
    registry_meta = materialization(result, "model_registry_entry")
    assert registry_meta["registry_id"].value == str(entry["_id"])
    return entry


def test_whole_graph_local_deployment(local_settings: Settings, mongo_db):
    expected = load_tiny_demo(mongo_db)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize_partition(KEY, settings=local_settings, run_config=tiny_run_config(),
                                       instance=instance)
    storage = local_settings.artifacts_dir
    assets = storage / "assets"  # one file per asset, partition and run
    entry = check_run(result, mongo_db, expected,
                      read_asset=lambda a: (assets / a / KEY / f"{result.run_id}.npz").read_bytes(),
                      read_artifact=lambda name: (storage / "models" / name).read_bytes())
    assert entry["bucket"] == str((storage / "models").resolve())


@pytest.mark.slow
def test_whole_graph_prod_deployment_on_gcs(prod_settings: Settings, gcs_client, mongo_db):
    expected = load_tiny_demo(mongo_db)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize_partition(KEY, settings=prod_settings, run_config=tiny_run_config(),
                                       instance=instance)
    prod_env = prod_settings.gcs_bucket
    bucket = gcs_client.bucket(prod_env)
    entry = check_run(result, mongo_db, expected,
                      read_asset=lambda a: bucket.blob(f"batchrec/assets/{a}/{KEY}/{result.run_id}.npz")
                      .download_as_bytes(),
                      read_artifact=lambda name: bucket.blob(f"batchrec/models/{name}").download_as_bytes())
    assert entry["bucket"] == prod_env and entry["uri"] == f"gs://{prod_env}/batchrec/models/{entry['file_name']}"
    stored = {b.name for b in gcs_client.list_blobs(prod_env)}
    assert {f"batchrec/assets/{a}/{KEY}/{result.run_id}.npz"
            for a in ("raw_repositories", "user_item_matrix", "vae_input", "recvae_model")} <= stored


def test_the_top_k_index_is_built_measured_stored_and_registered(local_settings: Settings, mongo_db):
    """A catalog above the switch-over gets its index at training: stored write-once next to the
    artifact, its recall measured on the held-out users, recorded in the registry entry and
    checked; the server's loader takes it as it is (no rebuild)."""
    from batchrec_dagster.serving.model.ann_index import AnnOptions
    from batchrec_dagster.serving.model.loaded import load_model
    from batchrec_dagster.storage.blobs import LocalBlobStore

    load_tiny_demo(mongo_db)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize_partition(KEY, settings=local_settings,
                                       run_config=tiny_run_config(ann_min_items=10), instance=instance)
    assert result.success
    entry = entries_for_partition(mongo_db, END)[0]
    record = entry["ann_index"]
    assert record["file_name"] == entry["file_name"] + ".faiss" and record["kind"] == "hnsw"
    assert record["artifact_sha256"] == entry["sha256"] and record["n_items"] == entry["data_sizes"]["items"]
    models = local_settings.artifacts_dir / "models"
    data = (models / record["file_name"]).read_bytes()
    assert sha256_hex(data) == record["sha256"] and len(data) == record["size_bytes"]
    assert record["recall_users"] == entry["data_sizes"]["test_users"] and record["recall"] >= 0.98
    model_meta = materialization(result, "recvae_model")
    assert model_meta["ann_recall@20"].value == record["recall"]
    assert model_meta["serving_path"].value == "approximate (hnsw)"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["recvae_model_index_recall"] is True
    loaded = load_model(entry, LocalBlobStore(models), None, ann=AnnOptions(min_items=10))
    assert loaded.ann["path"] == "approximate" and loaded.ann["source"] == "registry"
    assert loaded.ann["ef_search"] >= record["ef_search"]  # at least the beam recall was measured with
