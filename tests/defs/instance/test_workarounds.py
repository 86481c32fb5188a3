"""The Dagster behaviours batchrec_dagster/defs/instance/workarounds.py depends on, reproduced with
Dagster itself: each test fails when Dagster changes the behaviour, so that its workaround is
revisited (kept, changed or dropped) instead of going silently wrong.

Private Dagster imports are allowed here and only here among the tests: they reach exactly the
code paths that the workarounds work around.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.op_concurrency_limits_counter import GlobalOpConcurrencyLimitsCounter

from batchrec_dagster.defs.instance.run_reaper import worker_gone
from batchrec_dagster.defs.instance.workarounds import (
    GRPC_INFO_TAG,
    ensure_pool_limits,
    launched_by_local_code_server,
    run_worker,
)
from batchrec_dagster.localstack.process_groups import wait_all_gone
from batchrec_dagster.localstack.processes import stop_process
from tests.harness import noop_job

# Dagster's synchronous run coordinator (not exported by `dagster`), so that `dagster job launch`
# hands the run to DefaultRunLauncher at once, as the daemon does for a dequeued run
INSTANCE = """
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""


def test_default_run_launcher_tags_the_run_and_its_worker_logs_its_pid(tmp_path: Path) -> None:
    """1. and 2.: a real launch through a local code server (`dagster job launch`: a code server
    process, DefaultRunLauncher, a run worker process), read back the way run_reaper reads it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE)
    dagster = str(Path(sys.executable).with_name("dagster"))
    launch = subprocess.run([dagster, "job", "launch", "-f", noop_job.__file__, "-j", "noop_job"],
                            cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(home)},
                            capture_output=True, text=True, timeout=180)
    code_servers = [int(pid) for pid in re.findall(r"Started Dagster code server .* in process (\d+)",
                                                   launch.stderr + launch.stdout)]
    pids = list(code_servers)
    try:
        assert launch.returncode == 0, launch.stderr[-3000:]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            [run] = instance.get_runs()
            deadline = time.monotonic() + 60
            while not run.is_finished and time.monotonic() < deadline:
                time.sleep(0.2)  # polling interval; the deadline bounds it
                run = instance.get_run_by_id(run.run_id)
            assert run.status == dg.DagsterRunStatus.SUCCESS
            # 1. DefaultRunLauncher named the code server it launched through, on this machine
            assert GRPC_INFO_TAG in run.tags, run.tags
            assert launched_by_local_code_server(run.tags), run.tags[GRPC_INFO_TAG]
            # 2. the run worker logged its pid in the text run_reaper matches
            worker = run_worker(instance, run.run_id)
            assert worker is not None, [r.event_log_entry.dagster_event.message for r in
                                        instance.get_records_for_run(run.run_id).records]
            pid, logged_at = worker
            pids.append(pid)
            assert pid not in code_servers and abs(logged_at - time.time()) < 300
        # the worker exits with its run, which is what run_reaper then recognises
        assert wait_all_gone(pids, timeout_s=90) == []
        assert "is gone" in worker_gone(pid, logged_at)
    finally:
        for leftover in wait_all_gone(pids, timeout_s=0):
            stop_process(leftover)
        assert wait_all_gone(pids, timeout_s=10) == []


@dg.asset(pool="training")
def pooled_asset() -> None:
    return None


@dg.asset(pool="manual")
def manually_limited_asset() -> None:
    return None


POOLS = {"concurrency": {"pools": {"default_limit": 1, "granularity": "run"}}}


def dequeue_pass(instance: dg.DagsterInstance, queued: list[dg.DagsterRun]) -> list[str]:
    """The runs one dequeue pass of the QueuedRunCoordinatorDaemon launches, by the pool counter it
    builds for the pass (dagster/_daemon/run_coordinator/queued_run_coordinator_daemon.py)."""
    storage = instance.event_log_storage
    counter = GlobalOpConcurrencyLimitsCounter(
        instance, queued, [], concurrency_keys=storage.get_concurrency_keys(),
        pool_limits=storage.get_pool_limits(),
        pool_granularity=instance.get_concurrency_config().pool_config.pool_granularity)
    launched = []
    for run in queued:
        if not counter.is_blocked(run):
            counter.update_counters_with_launched_item(run)
            launched.append(run.run_id)
    return launched


@pytest.mark.parametrize("at_submission", [False, True])
def test_the_first_dequeue_pass_ignores_a_default_pool_limit_not_yet_written(at_submission: bool) -> None:
    """3.: two queued runs need the pool "training" (default_limit 1, never used before). Dagster's
    first pass writes the limit but launches both; ensure_pool_limits at submission prevents that.
    If the first case starts launching one, Dagster fixed it: drop ensure_pool_limits."""
    with dg.instance_for_test(overrides=POOLS) as instance:
        job = dg.Definitions(assets=[pooled_asset]).resolve_implicit_global_asset_job_def()
        runs = [instance.create_run_for_job(job) for _ in range(2)]  # as the queue holds them
        if at_submission:
            for run in runs:
                ensure_pool_limits(instance, run)
        first = dequeue_pass(instance, runs)
        assert len(first) == (1 if at_submission else 2)
        # from the next pass on, the limit written during the first one holds either way
        assert instance.event_log_storage.get_concurrency_info("training").slot_count == 1
        assert len(dequeue_pass(instance, runs)) == 1


def test_submission_writes_the_default_limit_once_and_keeps_manual_limits() -> None:
    with dg.instance_for_test(overrides=POOLS) as instance:
        defs = dg.Definitions(assets=[pooled_asset, manually_limited_asset])
        job = defs.resolve_implicit_global_asset_job_def()
        run = instance.create_run_for_job(job)
        storage = instance.event_log_storage
        storage.set_concurrency_slots("manual", 3)
        assert storage.get_concurrency_keys() == {"manual"}

        assert ensure_pool_limits(instance, run) == ["training"]
        assert storage.get_concurrency_info("training").slot_count == 1
        assert storage.get_concurrency_info("manual").slot_count == 3
        assert ensure_pool_limits(instance, run) == []  # known pools are left alone
