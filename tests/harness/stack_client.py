"""Driving a running `batchrec prod-stack`: its state file, its webserver over GraphQL, its instance."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance

from batchrec_dagster.localstack.postgres import PostgresConnection
from tests.harness.dagster_services import DagsterServices, wait_for


class StackClient(DagsterServices):
    """DagsterServices' GraphQL calls (what Dagit does), against the webserver of a prod-stack
    process that the test started; the processes themselves belong to that supervisor."""

    def __init__(self, home: Path, port: int, supervisor: subprocess.Popen, output: Path):
        self.home = home
        self.workdir = home / "logs"
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.processes = {"prod-stack": supervisor}  # _check_alive: the supervisor must be up
        self.output = output

    def logs(self, tail: int = 3000) -> str:
        parts = [f"--- prod-stack output ---\n{self.output.read_text(errors='replace')[-tail:]}"]
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name} (tail) ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def state(self) -> dict[str, Any]:
        path = self.home / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def service_pid(self, name: str) -> int:
        return self.state()["services"][name]["pid"]

    def wait_restarted(self, name: str, old_pid: int, restarts: int, timeout_s: float = 180) -> int:
        """The supervisor brought `name` back: a new pid and the restart counted."""
        def restarted() -> int | None:
            self._check_alive()
            service = self.state().get("services", {}).get(name)
            if service and service["restarts"] == restarts and service["pid"] != old_pid:
                return service["pid"]
            return None
        return wait_for(f"prod-stack to restart {name}", restarted, timeout_s, interval_s=0.5,
                        on_timeout=self.logs)

    def postgres_connection(self, port: int | None = None) -> PostgresConnection:
        postgres = self.state()["postgres"]
        password = (Path(postgres["root"]) / "password").read_text().strip()
        return PostgresConnection("127.0.0.1", port or postgres["port"], "dagster", password, "dagster")

    @contextmanager
    def instance(self, monkeypatch: pytest.MonkeyPatch, port: int | None = None) -> Iterator[DagsterInstance]:
        """The stack's Dagster instance, opened from its DAGSTER_HOME as its services open it."""
        with monkeypatch.context() as patch:
            for name, value in self.postgres_connection(port).dagster_env().items():
                patch.setenv(name, value)
            instance = DagsterInstance.from_config(self.state()["dagster_home"])
            try:
                yield instance
            finally:
                instance.dispose()


def step_window(instance: DagsterInstance, run_id: str, step_key: str) -> tuple[float, float]:
    """When a step started and succeeded, from the run's event log."""
    records = instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS})
    times = {r.dagster_event.event_type: r.timestamp for r in records if r.step_key == step_key}
    return times[DagsterEventType.STEP_START], times[DagsterEventType.STEP_SUCCESS]
