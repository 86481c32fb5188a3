"""`batchrec dev`: `dagster dev` on this deployment's Dagster instance and embedded services."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from batchrec_dagster.materialize import prepare_dagster_home
from batchrec_dagster.settings import PROJECT_ROOT, Settings


def run_dev(settings: Settings, dagster_args: list[str]) -> int:
    home = prepare_dagster_home(settings)
    if settings.deployment == "local" and not settings.mongodb_uri:
        from batchrec_dagster.embedded_mongo import ensure_embedded_mongo

        uri = ensure_embedded_mongo(settings.mongo_data_dir, settings.mongo_port)
        print(f"embedded MongoDB at {uri} (data in {settings.mongo_data_dir})")
    print(f"DAGSTER_HOME={home}; starting `dagster dev` (Ctrl-C to stop)", flush=True)
    dagster = Path(sys.executable).with_name("dagster")
    executable = str(dagster) if dagster.exists() else shutil.which("dagster") or "dagster"
    command = [executable, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), *dagster_args]
    os.chdir(PROJECT_ROOT)
    # exec rather than a child process: Ctrl-C and SIGTERM then reach `dagster dev` itself
    os.execv(executable, command)
    return 0  # not reached
