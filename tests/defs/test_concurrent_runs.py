"""Issue 13, point 3: two runs of one hour each register the artifact they trained themselves.

Two real runs of `hourly_training_job` for the same hour on one DAGSTER_HOME, BATCHREC_HOME and
database. The interleaving that broke it (the second run stores its model between the first run
storing its own and the first run's checks and registration loading it) is made certain instead
of left to timing: the first run executes in this process with the deployment's IO manager plus a
hook that, right after recvae_model is stored, runs a whole `batchrec materialize` of the same hour
as a separate process and waits for it. Nothing is replaced by a fake; only the moment is chosen.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batchrec_dagster.cli.materialize import JOB_NAME
from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.defs.io_managers import TypedIOManager
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.defs.resources import LocalArtifactStore
from batchrec_dagster.registry.models import entries_for_partition
from batchrec_dagster.settings import PROJECT_ROOT, Settings
from batchrec_dagster.storage.blobs import LocalBlobStore, sha256_hex
from recvae import load_artifact
from tests.defs.test_pipeline import KEY, load_tiny_demo
from tests.harness.deployments import tiny_run_config

pytestmark = pytest.mark.slow

AFTER_MODEL_STORED: list[Callable[[], None]] = []


class HookedIOManager(TypedIOManager):
    """The local deployment's IO manager; runs (once) what AFTER_MODEL_STORED holds right after
    storing recvae_model, before the run's checks and registration load it."""

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        super().handle_output(context, obj)
        if context.asset_key == dg.AssetKey("recvae_model"):
            while AFTER_MODEL_STORED:
                AFTER_MODEL_STORED.pop()()


def test_two_runs_of_one_hour_register_their_own_artifacts(local_env: Path, local_settings: Settings,
                                                          mongo_db, tmp_path: Path, monkeypatch) -> None:
    """The second run is `batchrec materialize` in a process of its own, which reads the deployment
    from its environment (local_env); this process builds the same definitions from local_settings."""
    load_tiny_demo(mongo_db)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    run_config = tiny_run_config()
    config_file = tmp_path / "run_config.json"
    config_file.write_text(json.dumps({"ops": run_config["ops"]}))
    second: list[subprocess.CompletedProcess] = []
    AFTER_MODEL_STORED.append(lambda: second.append(subprocess.run(
        [str(Path(sys.executable).with_name("batchrec")), "materialize", "--partition", KEY,
         "--run-config", str(config_file)], capture_output=True, text=True, timeout=600)))

    defs = build_definitions(local_settings)
    assets_dir = str(local_env / "storage" / "assets")
    with dg.DagsterInstance.get() as instance:
        first = defs.resolve_job_def(JOB_NAME).execute_in_process(
            partition_key=KEY, run_config=run_config, instance=instance,
            resources={"io_manager": HookedIOManager(store=LocalArtifactStore(root=assets_dir))})
        [done] = second
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        second_id = re.search(r"run (\S+) succeeded", done.stdout).group(1)
        assert first.success

        entries = entries_for_partition(mongo_db, partition_window(KEY)[1])
        assert sorted(e["run_id"] for e in entries) == sorted([first.run_id, second_id])
        store = LocalBlobStore(local_env / "storage" / "models")
        for entry in entries:
            data = store.read(entry["file_name"])
            assert sha256_hex(data) == entry["sha256"] and len(data) == entry["size_bytes"]
            assert load_artifact(data).extra["run_id"] == entry["run_id"], entry["file_name"]
        # no orphan: every artifact written is registered, by the run that wrote it
        written = sorted(p.name for p in store.root.glob("recvae_*.pt"))
        assert written == sorted(e["file_name"] for e in entries)

        # registering alone loads the newest stored model of the hour: the first run's, whose
        # materialization was recorded last (after the second run ended)
        alone = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            partition_key=KEY, instance=instance, asset_selection=[dg.AssetKey("model_registry_entry")])
        assert alone.success
    [first_entry] = [e for e in entries if e["run_id"] == first.run_id]
    [again] = [e for e in entries_for_partition(mongo_db, partition_window(KEY)[1])
               if e["run_id"] == alone.run_id]
    assert again["file_name"] == first_entry["file_name"] and again["sha256"] == first_entry["sha256"]
