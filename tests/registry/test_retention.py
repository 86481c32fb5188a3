"""Artifact retention on both stores (folder and the GCS emulator) and through the Dagster job."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster_gcp import GCSResource

from batchrec_dagster.defs.automation.retention_job import artifact_retention_job
from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.defs.io_managers import TypedIOManager
from batchrec_dagster.defs.resources import GCSArtifactStore, LocalArtifactStore, MongoResource, RunDefaults
from batchrec_dagster.registry.models import MODELS, referenced_files
from batchrec_dagster.registry.retention import apply_retention, needed_values, plan_retention
from batchrec_dagster.settings import Settings, load_settings
from batchrec_dagster.storage.blobs import BlobInfo, GCSBlobStore, LocalBlobStore, probe_write

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_plan_keeps_referenced_and_young_blobs() -> None:
    blobs = [BlobInfo("a.pt", NOW - timedelta(days=9), 10), BlobInfo("b.pt", NOW - timedelta(days=9), 20),
             BlobInfo("c.pt", NOW - timedelta(hours=1), 30)]
    report = plan_retention(blobs, {"a.pt"}, now=NOW, min_age=timedelta(hours=72), dry_run=True)
    assert [b.name for b in report.orphans] == ["b.pt"]
    assert (report.kept_referenced, report.kept_young, report.orphan_bytes) == (1, 1, 20)
    with pytest.raises(ValueError, match="timezone"):
        plan_retention(blobs, set(), now=NOW.replace(tzinfo=None), min_age=timedelta(0), dry_run=True)


@pytest.mark.parametrize("store_kind", ["local", "gcs"])
def test_orphans_are_deleted_and_referenced_artifacts_stay(store_kind, local_store, gcs_store, mongo_db):
    store = local_store if store_kind == "local" else gcs_store
    kept = store.put_new("recvae_kept.pt", b"kept")
    index = store.put_new("recvae_kept.pt.faiss", b"its top-k index")  # named by the entry: kept
    orphan = store.put_new("recvae_orphan.pt", b"orphan")
    mongo_db[MODELS].insert_one({"file_name": kept.name, "ann_index": {"file_name": index.name}})
    mongo_db[MODELS].insert_one({"file_name": {"not": "a name"}})  # a malformed entry references nothing
    assert referenced_files(mongo_db) == {kept.name, index.name}
    listed = list(store.list_blobs())
    assert {b.name for b in listed} == {kept.name, index.name, orphan.name}
    later = max(b.updated for b in listed) + timedelta(hours=80)

    dry = apply_retention(store, plan_retention(listed, referenced_files(mongo_db), now=later,
                                                min_age=timedelta(hours=72), dry_run=True))
    assert [b.name for b in dry.orphans] == [orphan.name] and store.exists(orphan.name)
    done = apply_retention(store, plan_retention(listed, referenced_files(mongo_db), now=later,
                                                 min_age=timedelta(hours=72), dry_run=False))
    assert done.errors == [] and not store.exists(orphan.name) and store.exists(kept.name)
    assert store.exists(index.name)


def test_only_the_newest_entries_keep_their_training_checkpoints(local_store, mongo_db):
    names = {}
    for hour in (1, 2, 3):
        model = local_store.put_new(f"recvae_{hour}.pt", b"model")
        checkpoint = local_store.put_new(f"recvae_{hour}.pt.moments", b"moments")
        names[hour] = (model.name, checkpoint.name)
        mongo_db[MODELS].insert_one({"file_name": model.name, "data_end": NOW + timedelta(hours=hour),
                                     "training_checkpoint": {"file_name": checkpoint.name}})
    # a data_end that is not a date (nx-27017 can store one as a string) counts as the oldest
    odd = local_store.put_new("recvae_odd.pt.moments", b"moments")
    mongo_db[MODELS].insert_one({"file_name": "recvae_odd.pt", "data_end": "2026-03-01T20:00:00",
                                 "training_checkpoint": {"file_name": odd.name}})
    kept = referenced_files(mongo_db, checkpoints_kept=2)
    assert kept == {names[1][0], names[2][0], names[3][0], "recvae_odd.pt", names[2][1], names[3][1]}
    assert referenced_files(mongo_db) == kept | {names[1][1], odd.name}  # None: every checkpoint
    listed = list(local_store.list_blobs())
    later = max(b.updated for b in listed) + timedelta(hours=80)
    done = apply_retention(local_store, plan_retention(listed, kept, now=later, min_age=timedelta(hours=72),
                                                       dry_run=False))
    assert sorted(b.name for b in done.orphans) == sorted([names[1][1], odd.name])
    assert not local_store.exists(names[1][1]) and local_store.exists(names[1][0])
    assert local_store.exists(names[3][1])


def test_write_probe_fails_early_on_a_store_it_cannot_write(tmp_path, gcs_client) -> None:
    store = LocalBlobStore(tmp_path / "store")
    probe_write(store, "run-1")
    assert list(store.list_blobs()) == []  # the probe removed itself
    # a folder path that is a file (root ignores permission bits, so chmod cannot make this fault)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(PermissionError, match="cannot write to the artifact store"):
        probe_write(LocalBlobStore(tmp_path / "file" / "models"), "run-2")
    # a bucket that does not exist: the emulator answers 404 over the JSON API
    with pytest.raises(PermissionError, match="gs://no-such-bucket-"):
        probe_write(GCSBlobStore(gcs_client, f"no-such-bucket-{time.time_ns()}", prefix="m"), "run-3")


def _age(path: Path, hours: float = 100) -> None:
    old = time.time() - hours * 3600
    os.utime(path, (old, old))


def _config(**config: object) -> dict:
    return {"ops": {"delete_orphan_artifacts": {"config": {"min_age_hours": 72, **config}}}}


def _report(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.metadata.items()}


def test_the_job_deletes_old_orphans(tmp_path, mongo_server_uri, mongo_db) -> None:
    root = tmp_path / "models"
    store = LocalBlobStore(root)
    kept, orphan, young = (store.put_new(n, n.encode()) for n in ("kept.pt", "orphan.pt", "young.pt"))
    for blob in (kept, orphan):
        _age(root / blob.name)
    mongo_db[MODELS].insert_one({"file_name": kept.name})
    resources = {"mongo": MongoResource(uri=mongo_server_uri, database=mongo_db.name),
                 "artifact_store": LocalArtifactStore(root=str(root)),
                 "io_manager": TypedIOManager(store=LocalArtifactStore(root=str(tmp_path / "assets"))),
                 "run_defaults": RunDefaults.from_settings(load_settings({}))}
    result = artifact_retention_job.execute_in_process(run_config=_config(dry_run=False), resources=resources)
    assert result.success and _report(result)["orphans"] == 1
    assert sorted(b.name for b in store.list_blobs()) == ["kept.pt", "young.pt"]


def _shipped_job(settings: Settings) -> dg.JobDefinition:
    """The job as the code location serves it: the deployment's own resources (issue 18, D2: the
    tests passed their own, which hid that the typed io_manager failed every shipped run)."""
    return build_definitions(settings).resolve_job_def("artifact_retention_job")


def _models(home: Path) -> LocalBlobStore:
    return LocalBlobStore(home / "storage" / "models")


def test_the_shipped_job_runs_dry_and_for_real(local_settings: Settings, mongo_db) -> None:
    """D2: as shipped, every run failed (dry runs too) with DagsterInvariantViolationError from the
    typed IO manager, after it had deleted."""
    store = _models(local_settings.home)
    kept, orphan = store.put_new("kept.pt", b"k"), store.put_new("orphan.pt", b"o")
    for blob in (kept, orphan):
        _age(store.root / blob.name)
    mongo_db[MODELS].insert_one({"file_name": kept.name})
    dry = _shipped_job(local_settings).execute_in_process(run_config=_config(dry_run=True))
    assert dry.success and _report(dry)["orphan_names"] == ["orphan.pt"] and store.exists(orphan.name)
    done = _shipped_job(local_settings).execute_in_process(run_config=_config(dry_run=False))
    assert done.success and _report(done)["orphans"] == 1 and _report(done)["dry_run"] is False
    assert [b.name for b in store.list_blobs()] == ["kept.pt"]


def test_a_registry_that_references_nothing_deletes_nothing(local_settings: Settings, mongo_db) -> None:
    """D3: retention against an empty registry (a typo in MONGODB_DATABASE) deleted every artifact."""
    store = _models(local_settings.home)
    names = [store.put_new(f"recvae_{i}.pt", b"x").name for i in range(3)]
    for name in names:
        _age(store.root / name)
    mongo_db[MODELS].insert_one({"file_name": "recvae_elsewhere.pt"})  # names none of the stored ones
    refused = _shipped_job(local_settings).execute_in_process(run_config=_config(dry_run=False),
                                                              raise_on_error=False)
    assert not refused.success
    [failure] = [e for e in refused.all_node_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error_display_string
    assert "references none of the 3 artifacts" in message and "force: true" in message
    assert sorted(b.name for b in store.list_blobs()) == names
    forced = _shipped_job(local_settings).execute_in_process(run_config=_config(dry_run=False, force=True))
    assert forced.success and list(store.list_blobs()) == []


def test_stored_asset_values_are_cleaned_but_what_the_next_hour_needs_stays(local_settings: Settings,
                                                                           mongo_db):
    """D15: the IO managers' stored values (storage/assets) were never cleaned. Files stand in for
    the values (retention reads names and ages only)."""
    model = _models(local_settings.home).put_new("recvae_a.pt", b"m")
    mongo_db[MODELS].insert_one({"file_name": model.name, "run_id": "run-a"})
    values = LocalBlobStore(local_settings.home / "storage" / "assets")
    h, h1 = "2026-03-01-20:00", "2026-03-01-21:00"
    old = {f"raw_repositories/{h}/run-a.npz": "gone", f"raw_repositories/{h1}/run-b.npz": "kept",
           f"raw_repositories/{h1}/run-c.npz": "kept", f"user_item_matrix/{h1}/run-b.npz": "gone",
           f"vae_input/{h}/run-a.npz": "gone", f"recvae_model/{h}/run-a.npz": "kept",
           f"recvae_model/{h1}/run-b.npz": "gone"}
    for name in old:
        values.put_new(name, b"v")
        _age(values.root / name)
    young = values.put_new(f"user_item_matrix/{h}/run-d.npz", b"v").name
    result = _shipped_job(local_settings).execute_in_process(run_config=_config(dry_run=False))
    assert result.success
    report = _report(result)
    expected = {name for name, fate in old.items() if fate == "kept"} | {young}
    assert {b.name for b in values.list_blobs()} == expected
    assert sorted(report["asset_values_orphan_names"]) == sorted(n for n, f in old.items() if f == "gone")
    assert (report["asset_values_kept_referenced"], report["asset_values_kept_young"]) == (3, 1)
    assert _models(local_settings.home).exists(model.name)


def test_gcs_asset_values_are_listed_and_deleted_by_their_relative_names(prod_env: str, gcs_client) -> None:
    """The prod twin of the above: the GCS IO manager's values as a blob store (relative names)."""
    for name in ("raw_repositories/2026-03-01-20:00/r1.npz", "raw_repositories/2026-03-01-21:00/r2.npz"):
        gcs_client.bucket(prod_env).blob(f"p/assets/{name}").upload_from_string(b"v")
    manager = TypedIOManager(store=GCSArtifactStore(gcs=GCSResource(project="batchrec-test"), bucket=prod_env,
                                                    prefix="p/assets"))
    store = manager.blob_store()
    listed = list(store.list_blobs())
    later = max(b.updated for b in listed) + timedelta(hours=80)
    report = apply_retention(store, plan_retention(listed, needed_values(listed, set()), now=later,
                                                   min_age=timedelta(hours=72), dry_run=False))
    assert [b.name for b in report.orphans] == ["raw_repositories/2026-03-01-20:00/r1.npz"]
    remaining = [b.name for b in gcs_client.list_blobs(prod_env)]
    assert remaining == ["p/assets/raw_repositories/2026-03-01-21:00/r2.npz"]


def test_the_shipped_job_runs_in_prod_on_gcs(prod_settings: Settings, gcs_client, mongo_db) -> None:
    """D2 in the prod deployment: GCS artifact store and GCS asset values, as the code location
    builds them from the environment."""
    prefix, prod_env = prod_settings.gcs_prefix, prod_settings.gcs_bucket
    bucket = gcs_client.bucket(prod_env)
    for name in ("models/kept.pt", "models/orphan.pt", "assets/raw_repositories/2026-03-01-20:00/r.npz"):
        bucket.blob(f"{prefix}/{name}").upload_from_string(b"x")
    mongo_db[MODELS].insert_one({"file_name": "kept.pt"})
    result = _shipped_job(prod_settings).execute_in_process(run_config=_config())
    assert result.success
    report = _report(result)
    assert report["dry_run"] is True  # prod's default (BATCHREC_RETENTION_DRY_RUN unset), via run_defaults
    # everything is younger than 72 h: reported as kept, nothing deleted
    assert (report["kept_referenced"], report["kept_young"], report["orphans"]) == (1, 1, 0)
    assert (report["asset_values_kept_referenced"], report["asset_values_orphans"]) == (1, 0)
    assert len(list(gcs_client.list_blobs(prod_env))) == 3
