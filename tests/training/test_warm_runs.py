"""Warm hourly runs through the whole graph on real servers (MongoDB wire protocol, local folder or
the GCS emulator): hour H+1 continues hour H's model, and retrains from scratch when it must."""

from dataclasses import dataclass, replace
from datetime import timedelta

import dagster as dg
import pytest

from batchrec_dagster.cli.materialize import asset_metadata, materialize_partition
from batchrec_dagster.defs.assets.metadata import rounded
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.deployments import blob_store_for
from batchrec_dagster.registry.models import entries_for_partition, referenced_files
from batchrec_dagster.settings import Settings
from batchrec_dagster.sources.demo_data import load_demo
from recvae import WarmConfig, load_artifact
from tests.harness.deployments import TINY_DEMO, tiny_run_config

H, H1, H2 = "2026-03-01-20:00", "2026-03-01-21:00", "2026-03-01-22:00"   # KST
WARM = {"warm_epochs": 2, "warm_patience": None}


@dataclass(frozen=True)
class Hours:
    instance: dg.DagsterInstance
    settings: Settings


@pytest.fixture
def hours(local_settings: Settings, mongo_db):
    """Demo stars over the days before H+2's end and after it; an instance for the runs."""
    load_demo(mongo_db, TINY_DEMO, end=partition_window(H2)[1] + timedelta(hours=6))
    with dg.DagsterInstance.ephemeral() as instance:
        yield Hours(instance, local_settings)


def run(hours: Hours, key: str, settings: Settings | None = None,
        **training) -> tuple[dg.ExecuteInProcessResult, dict, dict]:
    result = materialize_partition(key, settings=settings or hours.settings, instance=hours.instance,
                                   run_config=tiny_run_config(**WARM, **training))
    assert result.success
    return result, asset_metadata(result, "recvae_model"), asset_metadata(result, "raw_repositories")


def entry_of(db, key: str, result) -> dict:
    [entry] = [e for e in entries_for_partition(db, partition_window(key)[1]) if e["run_id"] == result.run_id]
    return entry


def test_next_hour_continues_the_previous_model(hours, mongo_db):
    first, model, raw = run(hours, H)
    assert model["training_mode"] == "full" and raw["read_mode"] == "full"
    assert model["training_mode_reason"].startswith("no registered recvae model")
    base = entry_of(mongo_db, H, first)
    assert base["training_mode"] == "full" and base["warm_start"] is None

    second, model, raw = run(hours, H1)
    assert raw["read_mode"] == "incremental"
    assert model["training_mode"] == "warm", model["training_mode_reason"]
    assert model["warm_start_from"] == base["file_name"] and model["warm_start_from_partition"] == H
    assert model["epochs"] <= WARM["warm_epochs"]
    assert 0.9 <= model["vocabulary_overlap"] <= 1.0 and model["vocabulary_kept"] > 0
    assert isinstance(model["initial_score"], float)
    # it trained what changed this hour (the users with new stars, plus a replay sample), and kept it
    assert 0 < model["warm_changed_users"] <= model["warm_focus_users"] <= model["warm_users_per_epoch"]
    assert model["warm_users_trained"] <= model["warm_training_users"]
    assert model["warm_weights_changed"] is True and model["warm_kept_epoch"] >= 1
    assert model["warm_new_items_trained"] == model["warm_new_items"]
    # the parent as it would serve this hour; initial_score is where training started (rows placed, shrunk)
    assert 0 < model["warm_initial_validation_ndcg"] <= 1 and model["initial_score"] > 0
    assert model["warm_validation_ndcg"] == pytest.approx(model["validation_score"], rel=1e-3)

    # the registry entry and the artifact say the same
    entry = entry_of(mongo_db, H1, second)
    assert entry["training_mode"] == "warm" and entry["training_mode_reason"] == model["training_mode_reason"]
    assert entry["warm_start"]["from"]["file_name"] == base["file_name"]
    assert entry["warm_start"]["from"]["sha256"] == base["sha256"]
    assert entry["warm_start"]["vocabulary"]["kept"] == model["vocabulary_kept"]
    artifact = load_artifact(blob_store_for(hours.settings).read(entry["file_name"]))
    assert artifact.extra["training_mode"] == "warm"
    assert artifact.extra["training_start"]["from"]["file_name"] == base["file_name"]
    assert rounded(artifact.extra["training_start"]["initial_metrics"]["ndcg@100"]) == model["initial_score"]
    recorded = entry["warm_start"]["warm"]
    for key in ("new_items", "new_items_trained", "changed_users", "users_trained", "kept_epoch",
                "weights_changed"):
        assert recorded[key] == model[f"warm_{key}"], key
    assert recorded["validation_ndcg"] == pytest.approx(model["warm_validation_ndcg"], rel=1e-3)
    # the artifact's weights are not its parent's
    parent = load_artifact(blob_store_for(hours.settings).read(base["file_name"]))
    assert entry["sha256"] != base["sha256"] and artifact.extra["training_start"]["warm"]["weights_changed"]
    assert parent.extra["training_mode"] == "full"
    # Adam went on from the full run's moments, stored next to its artifact, not inside it
    assert model["warm_optimizer_moments"] == "carried" and recorded["optimizer_moments"] == "carried"
    assert base["training_checkpoint"]["file_name"] == base["file_name"] + ".moments"
    assert base["training_checkpoint"]["artifact_sha256"] == base["sha256"]
    assert entry["training_checkpoint"]["file_name"] == model["training_checkpoint_file_name"]
    assert base["training_checkpoint"]["file_name"] in referenced_files(mongo_db)


@pytest.mark.parametrize("damage", ["missing", "tampered"])
def test_a_missing_or_damaged_checkpoint_starts_adam_afresh_and_says_so(hours, mongo_db, damage):
    first, _, _ = run(hours, H)
    checkpoint = entry_of(mongo_db, H, first)["training_checkpoint"]
    path = hours.settings.artifacts_dir / "models" / checkpoint["file_name"]
    path.chmod(0o644)
    if damage == "missing":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
    second, model, _ = run(hours, H1)
    assert model["training_mode"] == "warm" and model["warm_weights_changed"] is True
    note = model["warm_optimizer_moments"]
    assert note.startswith(f"fresh: training checkpoint {checkpoint['file_name']} not usable"), note
    assert ("does not exist" if damage == "missing" else "sha256") in note
    assert entry_of(mongo_db, H1, second)["warm_start"]["warm"]["optimizer_moments"] == note


def test_full_retrain_when_asked_daily_or_without_a_compatible_model(hours, mongo_db):
    run(hours, H)
    _, model, _ = run(hours, H1, mode="full")
    assert model["training_mode"] == "full"
    assert model["training_mode_reason"] == "asked in run config (mode: full)"

    # another architecture is not a start; the newest models are passed over, with the reason
    _, model, _ = run(hours, H2, hidden_dim=64)
    assert model["training_mode"] == "full"
    assert model["training_mode_reason"].startswith("no compatible model among the 2 newest")
    assert "architecture mismatch" in model["training_mode_reason"]

    daily_at_h2 = hours.settings.model_copy(update={"full_run_hour": 22})      # H2 is 22:00 KST
    _, model, _ = run(hours, H2, settings=daily_at_h2)
    assert model["training_mode"] == "full" and "daily full run at 22:00 KST" in model["training_mode_reason"]


def test_a_tampered_artifact_is_passed_over(hours, mongo_db):
    first, _, _ = run(hours, H)
    base = entry_of(mongo_db, H, first)
    path = hours.settings.artifacts_dir / "models" / base["file_name"]
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    _, model, _ = run(hours, H1)
    assert model["training_mode"] == "full"
    assert f"{base['file_name']}: artifact not readable" in model["training_mode_reason"]


def test_a_backfilled_hour_never_starts_from_a_model_that_saw_later_stars(hours, mongo_db):
    run(hours, H2)                      # the newest hour first, as when a backfill follows live runs
    _, model, _ = run(hours, H1)
    assert model["training_mode"] == "full", model["training_mode_reason"]
    assert model["training_mode_reason"].startswith("no registered recvae model")


def test_warm_training_config_keeps_epochs_and_budget_as_upper_bounds():
    from batchrec_dagster.defs.assets.config import WARM_TRAINING, TrainingConfig

    default = TrainingConfig().warm_recvae_config()
    assert (default.epochs, default.patience, default.time_budget_s) == (
        WARM_TRAINING["epochs"], WARM_TRAINING["patience"], WARM_TRAINING["time_budget_s"])
    # a warm epoch makes fewer encoder passes than a full one; the rest of the model is the same
    assert default.encoder_passes == WARM_TRAINING["encoder_passes"] < TrainingConfig().encoder_passes
    # the same steps unless told otherwise (a smaller warm rate was measured: docs/recvae.md)
    assert default.learning_rate == TrainingConfig().learning_rate
    assert TrainingConfig(warm_learning_rate=1e-4).warm_recvae_config().learning_rate == 1e-4
    assert replace(default, encoder_passes=TrainingConfig().encoder_passes, epochs=TrainingConfig().epochs,

                   patience=TrainingConfig().patience, time_budget_s=TrainingConfig().time_budget_s
                   ) == TrainingConfig().recvae_config()
    assert TrainingConfig().warm_config() == WarmConfig(replay_ratio=0.5, min_epoch_users=2000, shrink=0.9)
    capped = TrainingConfig(epochs=2, time_budget_s=60.0).warm_recvae_config()
    assert (capped.epochs, capped.time_budget_s) == (2, 60.0)
    unbounded = TrainingConfig(time_budget_s=None, warm_time_budget_s=None).warm_recvae_config()
    assert unbounded.time_budget_s is None
