"""Artifact retention on both stores (folder and the GCS emulator) and through the Dagster job."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from batchrec_dagster.registry import MODELS, referenced_files
from batchrec_dagster.resources import LocalArtifactStore, MongoResource
from batchrec_dagster.retention import apply_retention, plan_retention
from batchrec_dagster.retention_job import artifact_retention_job
from batchrec_dagster.storage import BlobInfo, GCSBlobStore, LocalBlobStore, probe_write

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
    orphan = store.put_new("recvae_orphan.pt", b"orphan")
    mongo_db[MODELS].insert_one({"file_name": kept.name})
    mongo_db[MODELS].insert_one({"file_name": {"not": "a name"}})  # a malformed entry references nothing
    assert referenced_files(mongo_db) == {kept.name}
    listed = list(store.list_blobs())
    assert {b.name for b in listed} == {kept.name, orphan.name}
    later = max(b.updated for b in listed) + timedelta(hours=80)

    dry = apply_retention(store, plan_retention(listed, referenced_files(mongo_db), now=later,
                                                min_age=timedelta(hours=72), dry_run=True))
    assert [b.name for b in dry.orphans] == [orphan.name] and store.exists(orphan.name)
    done = apply_retention(store, plan_retention(listed, referenced_files(mongo_db), now=later,
                                                 min_age=timedelta(hours=72), dry_run=False))
    assert done.errors == [] and not store.exists(orphan.name) and store.exists(kept.name)


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


def test_the_job_deletes_old_orphans(tmp_path, mongo_server_uri, mongo_db) -> None:
    root = tmp_path / "models"
    store = LocalBlobStore(root)
    kept, orphan, young = (store.put_new(n, n.encode()) for n in ("kept.pt", "orphan.pt", "young.pt"))
    old = time.time() - 100 * 3600
    for blob in (kept, orphan):
        os.utime(root / blob.name, (old, old))
    mongo_db[MODELS].insert_one({"file_name": kept.name})
    resources = {"mongo": MongoResource(uri=mongo_server_uri, database=mongo_db.name),
                 "artifact_store": LocalArtifactStore(root=str(root))}
    config = {"ops": {"delete_orphan_artifacts": {"config": {"dry_run": False, "min_age_hours": 72}}}}
    result = artifact_retention_job.execute_in_process(run_config=config, resources=resources)
    assert result.success and result.output_for_node("delete_orphan_artifacts") == 1
    assert sorted(b.name for b in store.list_blobs()) == ["kept.pt", "young.pt"]
    assert isinstance(result, dg.ExecuteInProcessResult)
