"""A whole local deployment for a test: demo stars in MongoDB, a fresh DAGSTER_HOME with the shipped
dagster.yaml, dagster-webserver + dagster-daemon, and the environment a `batchrec` CLI process of
that deployment needs (same DAGSTER_HOME, BATCHREC_HOME and database)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchrec_dagster.settings import PROJECT_ROOT
from batchrec_dagster.sources.demo_data import DemoSpec, generate_demo, write_source
from batchrec_dagster.sources.mongo import connect
from tests.harness.dagster_services import DagsterServices
from tests.harness.deployments import distant_full_run_hour

# stars spread over the last 12 hours: every hour sees a longer prefix than the one before
DEMO = DemoSpec(users=300, repos=120, days=0.5)


@dataclass
class Stack:
    services: DagsterServices
    db: Any                # pymongo Database with the demo stars
    home: Path             # BATCHREC_HOME (artifacts, typed asset values)
    dagster_home: Path
    env: dict[str, str]    # what the services run with; a CLI process of this deployment too


def code_location_workspace(path: Path, module: str) -> Path:
    """A workspace file loading `module` as the `batchrec` code location."""
    path.write_text(f"load_from:\n  - python_module:\n      module_name: {module}\n"
                    f"      location_name: batchrec\n      working_directory: {PROJECT_ROOT}\n")
    return path


@contextmanager
def dagster_stack(tmp_path: Path, mongo_server_uri: str, *, env: dict[str, str] | None = None,
                  workspace: Path | None = None, daemon: bool = True) -> Iterator[Stack]:
    """`daemon=False` starts only the webserver; the test calls `stack.services.start_daemon()`."""
    database = f"e2e_{uuid.uuid4().hex[:10]}"
    db = connect(mongo_server_uri)[database]
    write_source(db, generate_demo(DEMO, datetime.now(UTC)))
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    far_minute = (datetime.now(UTC).minute + 30) % 60  # the schedule must not fire during the test
    full_env = {
        "DAGSTER_HOME": str(dagster_home),
        "BATCHREC_HOME": str(tmp_path / "batchrec_home"),
        "BATCHREC_DEPLOYMENT": "local",
        "MONGODB_URI": mongo_server_uri,
        "MONGODB_DATABASE": database,
        "BATCHREC_SCHEDULE_MINUTE_OFFSET": str(far_minute),
        "BATCHREC_EVALUATION_MINUTE_OFFSET": str(far_minute),
        "BATCHREC_SENSOR_INTERVAL_SECONDS": "5",
        "BATCHREC_NEW_STARS_THRESHOLD": "50",
        "BATCHREC_FULL_RUN_HOUR": distant_full_run_hour(),
        **(env or {}),
    }
    services = DagsterServices(tmp_path, full_env, workspace=workspace)
    try:
        services.start(daemon=daemon)
        yield Stack(services, db, tmp_path / "batchrec_home", dagster_home, services.env)
    finally:
        services.stop()
        db.client.drop_database(database)
        db.client.close()
