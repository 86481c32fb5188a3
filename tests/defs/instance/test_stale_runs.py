"""Issue 13, point 1: a run whose process died is marked FAILED and stops holding the training pool.

Real processes: dagster-webserver + dagster-daemon on a fresh DAGSTER_HOME with the shipped
dagster.yaml, the project's code location (which lists stale_run_reaper), and
1. a `batchrec materialize` process of the same DAGSTER_HOME, killed with SIGKILL while training;
2. a daemon-launched run whose run worker and code server are both killed with SIGKILL.
Each time a run launched after the kill waits in the queue for the training pool, and must start
only once the dead run is FAILED, which must happen within the stated bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchrec_dagster.defs.automation.run_failures import RUN_FAILURES
from batchrec_dagster.defs.automation.star_arrivals import latest_closed_partition
from batchrec_dagster.defs.instance.process_identity import PID_TAG
from batchrec_dagster.defs.instance.run_reaper import REAPER_NAME
from batchrec_dagster.defs.instance.workarounds import worker_pid
from batchrec_dagster.localstack.process_groups import wait_all_gone
from batchrec_dagster.localstack.processes import cmdline, parent_of
from tests.defs.test_end_to_end import TINY, hour_before, run_config
from tests.harness.dagster_services import DagsterServices, wait_for
from tests.harness.dagster_stack import code_location_workspace, dagster_stack

pytestmark = pytest.mark.slow

REAPER_INTERVAL_S = 5
BOUND_S = 2 * REAPER_INTERVAL_S  # the guarantee: FAILED within two reaper intervals of the death
# the reaper runs in a code server; when the code server it ran in was killed as well,
# dagster-daemon starts a new one at its next workspace refresh (every 60 s)
CODE_SERVER_RESPAWN_S = 60
SLACK_S = 20  # GraphQL round trips and tick latency on a loaded 2-core machine
SLOW = {**TINY, "epochs": 100_000, "time_budget_s": 900.0}  # still training when it is killed


@pytest.fixture
def stack(tmp_path: Path, mongo_server_uri: str):
    workspace = code_location_workspace(tmp_path / "workspace.yaml", "batchrec_dagster.defs.definitions")
    env = {"BATCHREC_RUN_REAPER_INTERVAL_SECONDS": str(REAPER_INTERVAL_S)}
    with dagster_stack(tmp_path, mongo_server_uri, env=env, workspace=workspace) as stack:
        yield stack


def training(services: DagsterServices, run: dict | None) -> dict | None:
    """The run, once it is STARTED and its recvae_model step has begun."""
    if run is None or services.run(run["runId"])["status"] != "STARTED":
        return None
    return run if services.step_span(run["runId"], "recvae_model") else None


def reaped_then_next_runs(services: DagsterServices, dead_id: str, queued_id: str, killed_at: float,
                          timeout_s: float) -> float:
    """Wait for the dead run to be FAILED and the queued one to succeed after it; seconds to FAILED."""
    dead = wait_for(f"run {dead_id} to be marked failed",
                    lambda: (r := services.run(dead_id))["status"] == "FAILURE" and r,
                    timeout_s, interval_s=0.5, on_timeout=services.logs)
    failure = [e["message"] for e in services.events(dead_id) if e["__typename"] == "RunFailureEvent"]
    assert failure and REAPER_NAME in failure[-1], failure
    queued = services.wait_run(queued_id, timeout_s=300)
    assert queued["status"] == "SUCCESS", services.run_errors(queued_id)
    # it waited for the training pool until the dead run let go of it
    assert queued["startTime"] >= dead["endTime"], (queued, dead)
    return dead["endTime"] - killed_at


def test_dead_runs_are_failed_and_free_the_training_pool(stack, tmp_path: Path) -> None:
    services, latest = stack.services, latest_closed_partition(datetime.now(UTC))[0]
    slow = run_config()
    slow["ops"]["recvae_model"] = {"config": SLOW}
    slow_config = tmp_path / "slow.json"
    slow_config.write_text(json.dumps(slow))

    # 1. `batchrec materialize` of the same DAGSTER_HOME, killed with SIGKILL during training
    log = open(tmp_path / "materialize.log", "wb")  # noqa: SIM115 - closed below
    cli = subprocess.Popen(
        [str(Path(sys.executable).with_name("batchrec")), "materialize", "--partition", latest,
         "--run-config", str(slow_config)],
        env=stack.env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    try:
        run = wait_for("the CLI's run to be training",
                       lambda: training(services, next(iter(services.runs_tagged(PID_TAG, str(cli.pid))),
                                                       None)),
                       timeout_s=300, interval_s=1,
                       on_timeout=lambda: (tmp_path / "materialize.log").read_text())
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(timeout=30)
        log.close()
    killed_at = time.time()
    queued = services.launch_run("hourly_training_job", hour_before(latest, 1), run_config())
    seconds = reaped_then_next_runs(services, run["runId"], queued, killed_at, BOUND_S + SLACK_S)
    print(f"killed CLI run marked FAILED {seconds:.1f}s after SIGKILL (bound {BOUND_S}s)")

    # 2. a daemon-launched run whose run worker and code server both die
    launched = services.launch_run("hourly_training_job", hour_before(latest, 2), slow)
    wait_for("the daemon-launched run to be training", lambda: training(services, {"runId": launched}),
             timeout_s=300, interval_s=1, on_timeout=services.logs)
    [worker] = [pid for e in services.events(launched) if (pid := worker_pid(e.get("message") or ""))]
    code_server = parent_of(worker)
    assert any("dagster" in part for part in cmdline(code_server) or []), cmdline(code_server)
    queued = services.launch_run("hourly_training_job", hour_before(latest, 3), run_config())
    os.kill(code_server, signal.SIGKILL)  # first, so that it cannot report the worker's death
    os.kill(worker, signal.SIGKILL)
    assert wait_all_gone([code_server, worker], timeout_s=30) == []
    killed_at = time.time()
    seconds = reaped_then_next_runs(services, launched, queued, killed_at,
                                    CODE_SERVER_RESPAWN_S + BOUND_S + SLACK_S)
    print(f"run with dead worker + code server marked FAILED {seconds:.1f}s after SIGKILL "
          f"(bound {CODE_SERVER_RESPAWN_S}s code server respawn + {BOUND_S}s)")
    # the run-failure sensor records it, naming the reason
    record = wait_for("the run-failure sensor to record the run",
                      lambda: stack.db[RUN_FAILURES].find_one({"run_id": launched}), timeout_s=120)
    assert REAPER_NAME in record["error"] and f"pid {worker}" in record["error"]
