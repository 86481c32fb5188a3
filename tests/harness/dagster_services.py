"""dagster-webserver and dagster-daemon on loopback, driven over GraphQL as Dagit drives them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from batchrec_dagster.localstack.process_groups import stop_process_groups
from batchrec_dagster.settings import PROJECT_ROOT
from tests.harness.servers import free_port

LOCATION = "batchrec"
REPOSITORY = "__repository__"
IMPLICIT_JOB = "__ASSET_JOB"  # what Dagit runs for Materialize and asset backfills
T = TypeVar("T")


class ServiceError(RuntimeError):
    pass


class PortTakenError(ServiceError):
    """Another process got the webserver's port first (free_port only finds a port free now)."""


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, interval_s: float = 1.0,
             on_timeout: Callable[[], str] | None = None) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise ServiceError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval_s)  # poll interval between probes, not synchronisation


class DagsterServices:
    """Start both processes in `workdir`; `env` is added to the current environment."""

    def __init__(self, workdir: Path, env: dict[str, str], workspace: Path | None = None):
        self.workdir = workdir
        self.workspace = workspace or PROJECT_ROOT / "workspace.yaml"
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str]) -> None:
        binary = str(Path(sys.executable).with_name(args[0]))
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
        self.processes[name] = subprocess.Popen(
            [binary, *args[1:]], cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)

    def start(self, timeout_s: float = 240, daemon: bool = True) -> None:
        """The webserver, then (unless `daemon` is False: see start_daemon) the daemon."""
        for attempt in range(3):
            self._start("webserver", ["dagster-webserver", "-h", "127.0.0.1", "-p", str(self.port),
                                      "-w", str(self.workspace)])
            # one at a time: two processes creating a fresh DAGSTER_HOME's SQLite schema at once
            # race ("Version table 'alembic_version' has more than one head present")
            try:
                wait_for("the webserver to load the code location", self._location_loaded, timeout_s,
                         on_timeout=self.logs)
                break
            except PortTakenError:
                if attempt == 2:
                    raise
                self._stop("webserver")
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        if daemon:
            self.start_daemon(timeout_s)

    def start_daemon(self, timeout_s: float = 240) -> None:
        self._start("daemon", ["dagster-daemon", "run", "-w", str(self.workspace)])
        wait_for("the daemons to report healthy", self._daemons_healthy, timeout_s, interval_s=2,
                 on_timeout=self.logs)

    def stop(self) -> None:
        self._stop(*self.processes)

    def _stop(self, *names: str) -> None:
        # the process groups: the code servers they started too
        stop_process_groups(*(self.processes[name] for name in names), timeout_s=30)

    def logs(self, tail: int = 4000) -> str:
        parts = []
        for name in self.processes:
            path = self.workdir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name} log (tail) ---\n{text[-tail:]}")
        return "\n".join(parts)

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ServiceError(f"{name} exited with {process.returncode}\n{self.logs()}")

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        self._check_alive()
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=60)
        try:
            body = response.json()
        except ValueError:
            response.raise_for_status()
            raise
        # a resolver's exception comes back as a 500 whose body names it (in `errors`, or as a
        # PythonError in `data`): say what it was
        if body.get("errors") or not response.ok:
            raise ServiceError(f"GraphQL HTTP {response.status_code}: {body}")
        return body["data"]

    def _location_loaded(self) -> bool:
        try:
            self._check_alive()
        except ServiceError as exc:
            if "address already in use" in str(exc):
                raise PortTakenError(str(exc)) from exc
            raise
        try:
            info = self.graphql("{ instance { info } }")["instance"]["info"] or ""
            data = self.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
                name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
        except requests.RequestException:
            return False
        home = self.env.get("DAGSTER_HOME")
        if home and home not in info:
            raise PortTakenError(f"port {self.port} is answered by a webserver of another DAGSTER_HOME")
        for entry in data["workspaceOrError"]["locationEntries"]:
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise ServiceError(f"code location failed to load: {error['message']}")
                return True
        return False

    def _daemons_healthy(self) -> bool:
        statuses = self.graphql("""{ instance { daemonHealth { allDaemonStatuses {
            daemonType healthy required } } } }""")["instance"]["daemonHealth"]["allDaemonStatuses"]
        needed = {"SCHEDULER", "SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR"}
        return needed <= {s["daemonType"] for s in statuses if s["healthy"]}

    # ------------------------------------------------------------------ what Dagit does

    def launch_run(self, job: str, partition_key: str, run_config: dict[str, Any]) -> str:
        return self._launch({"jobName": job}, partition_key, run_config)

    def materialize(self, assets: list[str], partition_key: str, run_config: dict[str, Any]) -> str:
        """Materialize on the asset graph: launchRun of Dagster's implicit asset job with a selection."""
        return self._launch({"jobName": IMPLICIT_JOB, "assetSelection": [{"path": [a]} for a in assets]},
                            partition_key, run_config)

    def _launch(self, selector: dict[str, Any], partition_key: str, run_config: dict[str, Any]) -> str:
        data = self.graphql("""
            mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message stack } ... on RunConfigValidationInvalid { errors { message } }
                ... on Error { message } } }""", {"params": {
            "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, **selector},
            "runConfigData": run_config,
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition_key}]},
        }})["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise ServiceError(f"launchRun failed: {data}")
        return data["run"]["runId"]

    def pools_and_tags(self, run_id: str) -> tuple[str, list[str], dict[str, str]]:
        """A run's job name, the pools its steps use, and its tags."""
        run = self.graphql("""query R($id: ID!) { runOrError(runId: $id) { ... on Run {
            jobName allPools tags { key value } } } }""", {"id": run_id})["runOrError"]
        return run["jobName"], run["allPools"], {t["key"]: t["value"] for t in run["tags"]}

    def launch_backfill(self, assets: list[str], partition_keys: list[str],
                        run_config: dict[str, Any]) -> str:
        data = self.graphql("""
            mutation Backfill($params: LaunchBackfillParams!) {
              launchPartitionBackfill(backfillParams: $params) {
                __typename ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message stack } ... on Error { message } } }""", {"params": {
            "assetSelection": [{"path": [name]} for name in assets],
            "partitionNames": partition_keys,
            "runConfigData": run_config,
        }})["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise ServiceError(f"launchPartitionBackfill failed: {data}")
        return data["backfillId"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.graphql("""query Run($id: ID!) { runOrError(runId: $id) { ... on Run {
            runId status startTime endTime tags { key value } } } }""", {"id": run_id})["runOrError"]

    def wait_run(self, run_id: str, timeout_s: float) -> dict[str, Any]:
        finished = ("SUCCESS", "FAILURE", "CANCELED")
        return wait_for(f"run {run_id} to finish",
                        lambda: (r := self.run(run_id))["status"] in finished and r,
                        timeout_s, on_timeout=self.logs)

    def run_errors(self, run_id: str) -> str:
        """The step failures of a run, for assertion messages."""
        events = self.graphql("""query L($id: ID!) { logsForRun(runId: $id) { ... on EventConnection {
            events { __typename ... on ExecutionStepFailureEvent { stepKey error { message
                causes { message } } } } } } }""", {"id": run_id})["logsForRun"]["events"]
        return "\n".join(f"{e['stepKey']}: {e['error']['message']} "
                         f"{' / '.join(c['message'] for c in e['error']['causes'])}"
                         for e in events if e["__typename"] == "ExecutionStepFailureEvent")

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        return self.graphql("""query B($id: String!) { partitionBackfillOrError(backfillId: $id) {
            ... on PartitionBackfill { id status partitionNames
                runs { runId status creationTime startTime endTime tags { key value } } } } }""",
                            {"id": backfill_id})["partitionBackfillOrError"]

    def instigator(self, kind: str, name: str) -> dict[str, Any]:
        """kind: "schedule" or "sensor"; returns its state with the latest ticks."""
        selector_name = "scheduleName" if kind == "schedule" else "sensorName"
        state = "scheduleState" if kind == "schedule" else "sensorState"
        selector_type = "ScheduleSelector" if kind == "schedule" else "SensorSelector"
        field = f"{kind}OrError"
        query = f"""query I($selector: {selector_type}!) {{ {field}({kind}Selector: $selector) {{
            ... on {kind.capitalize()} {{ name {state} {{ id selectorId status
                ticks(limit: 10) {{ status skipReason runIds timestamp error {{ message }} }} }} }}
            ... on PythonError {{ message }} }} }}"""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, selector_name: name}
        return self.graphql(query, {"selector": selector})[field][state]

    def stop_schedule(self, name: str) -> str:
        state = self.instigator("schedule", name)
        # A schedule running by default has no stored state until the scheduler daemon's first
        # pass writes one; a stop in the same moment also inserts one, and the later insert fails
        # with "InstigatorState ... is already present in storage" (dagster.Scheduler.stop_schedule
        # reads, then inserts). A user clicks again; so does this, once the state is stored.
        query = """mutation S($id: String!) { stopRunningSchedule(id: $id) {
            __typename ... on ScheduleStateResult { scheduleState { status } }
            ... on PythonError { message } } }"""
        for attempt in (1, 2, 3):
            try:
                data = self.graphql(query, {"id": state["id"]})["stopRunningSchedule"]
                return data["scheduleState"]["status"]
            except ServiceError as exc:
                if attempt == 3 or "is already present in storage" not in str(exc):
                    raise

    def start_sensor(self, name: str) -> str:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
        data = self.graphql("""mutation S($selector: SensorSelector!) {
          startSensor(sensorSelector: $selector) {
            __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
                            {"selector": selector})["startSensor"]
        if data["__typename"] != "Sensor":
            raise ServiceError(f"startSensor failed: {data}")
        return data["sensorState"]["status"]

    def freshness(self, asset: str) -> str | None:
        data = self.graphql("""query F($keys: [AssetKeyInput!]) { assetNodes(assetKeys: $keys) {
            freshnessStatusInfo { freshnessStatus } } }""", {"keys": [{"path": [asset]}]})["assetNodes"]
        info = data[0]["freshnessStatusInfo"] if data else None
        return info["freshnessStatus"] if info else None

    # ------------------------------------------------------------------ what the event log says

    def runs_tagged(self, key: str, value: str) -> list[dict[str, Any]]:
        return self.graphql("""query R($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
            ... on Runs { results { runId status startTime endTime tags { key value } } } } }""",
                            {"tags": [{"key": key, "value": value}]})["runsOrError"]["results"]

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's step starts/ends and engine events: typename, stepKey, message, timestamp (s)."""
        events = self.graphql("""query L($id: ID!) { logsForRun(runId: $id) { ... on EventConnection {
            events { __typename ... on MessageEvent { message timestamp }
                ... on StepEvent { stepKey } } } } }""", {"id": run_id})["logsForRun"]["events"]
        return [{**e, "timestamp": float(e["timestamp"]) / 1000} for e in events]

    def step_span(self, run_id: str, step_key: str) -> tuple[float, float | None] | None:
        """(start, end) of a step from the event log; end is None while it runs."""
        start = end = None
        for event in self.events(run_id):
            if event.get("stepKey") != step_key:
                continue
            if event["__typename"] == "ExecutionStepStartEvent":
                start = event["timestamp"]
            elif event["__typename"] in ("ExecutionStepSuccessEvent", "ExecutionStepFailureEvent"):
                end = event["timestamp"]
        return None if start is None else (start, end)
