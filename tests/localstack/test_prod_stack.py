"""End to end in the production shape: `batchrec prod-stack` started for real, as a user starts it.

It starts a local PostgreSQL cluster (initdb + pg_ctl), `dagster code-server start`,
`dagster-webserver` and `dagster-daemon run` as separate processes. The test drives the webserver
over GraphQL as Dagit does and reads the instance from PostgreSQL. MongoDB is the session's
nx-27017 server; training is tiny (run config), the quality gate is lowered (tested elsewhere).

1. two launched runs queue on the training pool across processes; the daemon is SIGKILLed while
   the first trains; the supervisor restarts it; no run is lost and the queued one starts after
   the first ends (run times and recvae_model step times from the event log); both register a model;
2. the code server is stopped (SIGTERM) and restarted by the supervisor; a run launched afterwards
   goes through the new server and registers a model;
3. SIGTERM to the supervisor with one run training and one queued: the training run is canceled,
   the queued one stays queued in PostgreSQL for the next start, and every process is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_postgres import PostgresRunStorage

from batchrec_dagster.defs.automation.star_arrivals import latest_closed_partition
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.localstack.postgres import LocalPostgres
from batchrec_dagster.localstack.process_groups import kill_all, terminate, wait_all_gone
from batchrec_dagster.localstack.processes import group_members, is_running
from batchrec_dagster.registry.models import entries_for_partition
from batchrec_dagster.sources.demo_data import DemoSpec, generate_demo, write_source
from batchrec_dagster.sources.mongo import connect
from tests.defs.test_end_to_end import TINY, Clock, hour_before, run_config
from tests.harness.dagster_services import wait_for
from tests.harness.servers import free_port
from tests.harness.stack_client import StackClient, step_window

pytestmark = pytest.mark.slow

JOB = "hourly_training_job"


def training(**overrides: object) -> dict:
    config = run_config()
    config["ops"]["recvae_model"] = {"config": {**TINY, **overrides}}
    return config


@pytest.fixture
def stack(pg_root: Path, mongo_server_uri: str):
    database = f"prod_{uuid.uuid4().hex[:10]}"
    db = connect(mongo_server_uri)[database]
    write_source(db, generate_demo(DemoSpec(users=300, repos=120, days=0.5), datetime.now(UTC)))
    home, port = pg_root / "stack", free_port()
    home.mkdir()
    output = pg_root / "prod-stack.out"
    env = {**os.environ, "BATCHREC_HOME": str(pg_root / "batchrec_home"), "BATCHREC_DEPLOYMENT": "local",
           "MONGODB_URI": mongo_server_uri, "MONGODB_DATABASE": database,
           # the hourly schedule must not fire during the test
           "BATCHREC_SCHEDULE_MINUTE_OFFSET": str((datetime.now(UTC).minute + 30) % 60)}
    with open(output, "wb") as out:
        supervisor = subprocess.Popen(
            [str(Path(sys.executable).with_name("batchrec")), "prod-stack", "--home", str(home),
             "-p", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    client = StackClient(home, port, supervisor, output)
    try:
        wait_for("prod-stack to be ready", lambda: client._check_alive() or client.state().get("ready"),
                 timeout_s=420, on_timeout=client.logs)
        yield client, db, supervisor
    finally:
        _stop_everything(client, supervisor)
        db.client.drop_database(database)
        db.client.close()


def _stop_everything(client: StackClient, supervisor: subprocess.Popen) -> None:
    """After a failure half-way: what the supervisor did not stop, stopped here by PID."""
    state = client.state()
    terminate(supervisor, timeout_s=120)
    for service in state.get("services", {}).values():
        kill_all(group_members(service["pid"]))  # raises if any outlives SIGKILL
    # a cluster left running is stopped by the pg_root fixture


def test_production_stack(stack, monkeypatch: pytest.MonkeyPatch) -> None:
    client, db, supervisor = stack
    clock = Clock()
    latest = latest_closed_partition(datetime.now(UTC))[0]
    key_a, key_b, key_c, key_d, key_e = (hour_before(latest, n) for n in (5, 4, 3, 2, 1))
    with client.instance(monkeypatch) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
    clock(f"prod-stack ready: {client.state()['services']}")

    # 1. two runs on the training pool; the daemon dies while the first trains
    run_a = client.launch_run(JOB, key_a, training(epochs=20))
    run_b = client.launch_run(JOB, key_b, training())
    # killed once A's worker runs (a daemon killed between marking a run STARTING and handing it
    # to the code server leaves it STARTING until run monitoring's start timeout fails it and
    # run_retries launches it again: docs/production.md)
    wait_for("run A to start", lambda: client.run(run_a)["status"] == "STARTED", timeout_s=180,
             interval_s=0.2, on_timeout=client.logs)
    assert client.run(run_b)["status"] == "QUEUED"  # the pool's one slot is A's
    daemon = client.service_pid("daemon")
    os.killpg(daemon, signal.SIGKILL)
    killed_at = datetime.now(UTC).timestamp()
    assert not wait_all_gone([daemon], timeout_s=10)
    clock(f"run A {client.run(run_a)['status']}, run B QUEUED: daemon {daemon} SIGKILLed")
    new_daemon = client.wait_restarted("daemon", daemon, restarts=1)
    clock(f"daemon restarted by the supervisor: pid {new_daemon}")
    a, b = client.wait_run(run_a, timeout_s=300), client.wait_run(run_b, timeout_s=300)
    assert (a["status"], b["status"]) == ("SUCCESS", "SUCCESS"), \
        client.run_errors(run_a) + client.run_errors(run_b)
    assert a["endTime"] > killed_at, "the daemon was to die while run A was in progress"
    assert b["startTime"] >= a["endTime"], (a, b)  # B waited for A's slot, after the daemon came back
    with client.instance(monkeypatch) as instance:
        train_a = step_window(instance, run_a, "recvae_model")
        train_b = step_window(instance, run_b, "recvae_model")
        assert train_a[1] <= train_b[0], f"training overlapped: {train_a} {train_b}"
        assert len(instance.get_runs()) == 2
    for run_id, key in ((run_a, key_a), (run_b, key_b)):
        assert [e["run_id"] for e in entries_for_partition(db, partition_window(key)[1])] == [run_id]
    clock(f"A and B SUCCESS; recvae_model of A {train_a[1] - train_a[0]:.1f}s, B began "
          f"{train_b[0] - train_a[1]:.1f}s after A's ended")

    # 2. the code server restarts (a new image rolling out); runs go on through the new one
    code_server = client.service_pid("code-server")
    old_group = group_members(code_server)
    os.kill(code_server, signal.SIGTERM)
    new_code_server = client.wait_restarted("code-server", code_server, restarts=1)
    assert not wait_all_gone(old_group, timeout_s=30)
    wait_for("the webserver to load the location from the new code server",
             lambda: client.state()["location_reloads"] == 1, timeout_s=240, on_timeout=client.logs)
    clock(f"code server {code_server} stopped, {new_code_server} serving, location reloaded")
    run_c = client.launch_run(JOB, key_c, training())
    c = client.wait_run(run_c, timeout_s=300)
    assert c["status"] == "SUCCESS", client.run_errors(run_c)
    assert [e["run_id"] for e in entries_for_partition(db, partition_window(key_c)[1])] == [run_c]
    clock("run C SUCCESS after the code-server restart")

    # 3. stop the stack with a run training and a run queued
    # a full run: run C's model is within 24 h, so D would otherwise warm-start, train its 5 warm
    # epochs in seconds and could be done before the stop cancels it
    run_d = client.launch_run(JOB, key_d, training(mode="full", epochs=100_000, time_budget_s=900.0))
    run_e = client.launch_run(JOB, key_e, training())
    wait_for("run D to train", lambda: client.run(run_d)["status"] == "STARTED", timeout_s=180,
             on_timeout=client.logs)
    assert client.run(run_e)["status"] == "QUEUED"
    state = client.state()
    pids = [state["postgres"]["pid"],
            *(pid for service in state["services"].values() for pid in group_members(service["pid"]))]
    assert len(pids) >= 5  # postgres, code server + its gRPC child + D's worker, webserver, daemon
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=240) == 0, client.logs()
    output = client.output.read_text()
    assert f"canceled runs in progress: {run_d}" in output
    assert "every process of the stack is gone" in output
    assert not [pid for pid in pids if is_running(pid)]
    clock(f"prod-stack stopped on SIGTERM: {len(pids)} processes gone")

    # PostgreSQL kept everything: D canceled, E still queued for the next start, A-C done
    cluster = LocalPostgres(Path(state["postgres"]["root"]))
    port = free_port()
    cluster.start(port)
    try:
        with client.instance(monkeypatch, port=port) as instance:
            statuses = {run_id: instance.get_run_by_id(run_id).status
                        for run_id in (run_a, run_b, run_c, run_d, run_e)}
    finally:
        cluster.stop()
    assert statuses == {run_a: DagsterRunStatus.SUCCESS, run_b: DagsterRunStatus.SUCCESS,
                        run_c: DagsterRunStatus.SUCCESS, run_d: DagsterRunStatus.CANCELED,
                        run_e: DagsterRunStatus.QUEUED}
    clock("run D CANCELED, run E QUEUED in PostgreSQL after the stop")
