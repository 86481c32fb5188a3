"""run_reaper and process_identity on real processes and a real (SQLite) Dagster instance.

The processes are real children of the test (`sleep`), killed for real; a zombie is a killed child
not yet waited for. The end-to-end case (webserver + daemon, kill -9 of a CLI run and of a run
worker with its code server) is tests/defs/instance/test_stale_runs.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import dagster as dg
import pytest

from batchrec_dagster.defs.instance.process_identity import (
    HOST_TAG,
    PID_TAG,
    PROCESS_START_TAG,
    ProcessState,
    current_process_tags,
    hostname,
    process_start,
    process_started_at,
    process_state,
)
from batchrec_dagster.defs.instance.run_reaper import REAPER_NAME, reap_dead_runs, worker_gone
from batchrec_dagster.defs.instance.workarounds import GRPC_INFO_TAG, WORKER_STARTED
from batchrec_dagster.settings import SettingsError, load_settings
from tests.harness.noop_job import noop_job

STARTED = dg.DagsterRunStatus.STARTED


@pytest.fixture
def child() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(["sleep", "300"])
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    assert process.poll() is not None


def killed(process: subprocess.Popen) -> int:
    process.kill()
    process.wait(timeout=10)
    return process.pid


def test_a_process_is_alive_until_killed_and_a_reused_pid_is_told_apart(child) -> None:
    start = process_start(child.pid)
    assert start and process_state(child.pid, start) is ProcessState.ALIVE
    # the same PID with another start time: the PID now belongs to another process
    assert process_state(child.pid, start + "0") is ProcessState.GONE
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped: a zombie
    assert process_state(child.pid, start) is ProcessState.GONE
    killed(child)
    assert process_state(child.pid, start) is ProcessState.GONE
    assert process_state(0, None) is ProcessState.UNKNOWN


def test_start_time_and_tags_name_this_process(child) -> None:
    assert abs(process_started_at(child.pid) - time.time()) < 5  # it was started just now
    assert current_process_tags() == {HOST_TAG: hostname(), PID_TAG: str(os.getpid()),
                                      PROCESS_START_TAG: process_start(os.getpid())}
    started = process_started_at(os.getpid())
    assert worker_gone(os.getpid(), logged_at=time.time()) is None
    assert "newer process" in worker_gone(os.getpid(), logged_at=started - 100)
    assert "is gone" in worker_gone(killed(child), logged_at=time.time())


def test_interval_comes_from_the_settings() -> None:
    assert load_settings({}).run_reaper_interval_seconds == 30
    assert load_settings({"BATCHREC_RUN_REAPER_INTERVAL_SECONDS": "5"}).run_reaper_interval_seconds == 5
    with pytest.raises(SettingsError, match="BATCHREC_RUN_REAPER_INTERVAL_SECONDS"):
        load_settings({"BATCHREC_RUN_REAPER_INTERVAL_SECONDS": "1"})


def started_run(instance: dg.DagsterInstance, tags: dict[str, str], worker_pid: int | None = None,
                status: dg.DagsterRunStatus = STARTED) -> str:
    run = instance.create_run_for_job(noop_job, status=status, tags=tags)
    if worker_pid is not None:
        # what a run worker logs first (test_workarounds.py checks the text against Dagster's)
        instance.report_engine_event(WORKER_STARTED.format(pid=worker_pid), run)
    return run.run_id


def test_reaper_fails_exactly_the_runs_whose_process_is_gone(child) -> None:
    start = process_start(child.pid)
    dead_pid = killed(child)
    me = current_process_tags()
    local = {GRPC_INFO_TAG: json.dumps({"host": "localhost", "socket": "/tmp/x"})}
    remote = {GRPC_INFO_TAG: json.dumps({"host": "code-server.internal", "port": 4000})}
    with dg.instance_for_test() as instance:
        dead_cli = started_run(instance, {**me, PID_TAG: str(dead_pid), PROCESS_START_TAG: start})
        reused_cli = started_run(instance, {**me, PROCESS_START_TAG: "another-boot:1"})
        dead_worker = started_run(instance, local, worker_pid=dead_pid)
        keep = {
            "live CLI run": started_run(instance, me),
            "another host's CLI run": started_run(instance, {**me, HOST_TAG: "elsewhere",
                                                             PID_TAG: str(dead_pid)}),
            "live worker": started_run(instance, local, worker_pid=os.getpid()),
            "remote code server": started_run(instance, remote, worker_pid=dead_pid),
            "no record of a worker yet": started_run(instance, local),
            "untagged": started_run(instance, {}),
            "finished": started_run(instance, {**me, PID_TAG: str(dead_pid)},
                                    status=dg.DagsterRunStatus.SUCCESS),
        }

        reaped = reap_dead_runs(instance, hostname())
        assert sorted(r.run_id for r in reaped) == sorted([dead_cli, reused_cli, dead_worker])
        for run_id in (dead_cli, reused_cli, dead_worker):
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            [failure] = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
            assert REAPER_NAME in failure.event_log_entry.dagster_event.message
        for what, run_id in keep.items():
            expected = dg.DagsterRunStatus.SUCCESS if what == "finished" else STARTED
            assert instance.get_run_by_id(run_id).status == expected, what
        assert reap_dead_runs(instance, hostname()) == []  # nothing twice
