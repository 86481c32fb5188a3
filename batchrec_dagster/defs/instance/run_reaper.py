"""stale_run_reaper: mark a run FAILED once the process that ran it is gone, which frees its pool.

Why Dagster does not do it by itself (1.13): run monitoring asks the run launcher about a STARTED
run's worker, but `DefaultRunLauncher` (what `dagster dev` and `dagster-daemon` use locally) does
not support `check_run_worker_health`, so only start/cancel timeouts and `max_runtime_seconds`
apply. The code server fails a run whose worker subprocess died, but only while that code server
itself lives. A run executed in-process by `batchrec materialize` has no worker at all. Killed with
kill -9, such runs stay STARTED and, because `recvae_model` is in the `training` pool (run
granularity), every later training run stays QUEUED.

What the reaper knows about a STARTED run's process, and how it tells that the process is gone:
- a run of our CLI carries `batchrec/host`, `batchrec/pid`, `batchrec/process_start` tags
  (process_identity.current_process_tags); on the same host the PID must still exist with the
  same start time;
- a run launched through a local code server (DefaultRunLauncher, its `.dagster/grpc_info` tag
  names localhost or a socket) logged "Started process for run (pid: N)" from its worker; PID N
  must still exist and have started no later than that event (else the PID was reused). Both are
  Dagster internals, read in workarounds.py only.
Anything else (another host, another launcher, no record yet) is left alone: those have run
monitoring (e.g. the k8s launcher checks its pods) or `run_monitoring.max_runtime_seconds`.

Guarantee: a run whose process died is FAILED at the first tick after it died, i.e. within one
interval plus one tick's latency (<= 2 x BATCHREC_RUN_REAPER_INTERVAL_SECONDS, default 30 s). With
run granularity the pool slot is the run's in-progress status, so the run queue launches the next
training run at its next dequeue (every 5 s) after that.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from batchrec_dagster.defs.instance.process_identity import (
    HOST_TAG,
    PID_TAG,
    PROCESS_START_TAG,
    ProcessState,
    hostname,
    process_started_at,
    process_state,
)
from batchrec_dagster.defs.instance.workarounds import launched_by_local_code_server, run_worker

REAPER_NAME = "stale_run_reaper"
# /proc start times are computed from the integer boot time, so allow a second or two of error
PID_REUSE_SLACK_S = 2.0


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    reason: str


def _in_process_run_gone(tags: Mapping[str, str], host: str) -> str | None:
    if tags.get(HOST_TAG) != host:
        return None  # another machine's process: not ours to judge
    try:
        pid = int(tags[PID_TAG])
    except ValueError:
        return None
    if process_state(pid, tags.get(PROCESS_START_TAG) or None) is not ProcessState.GONE:
        return None
    return f"the process that executed it in-process (pid {pid} on {host}) is gone"


def worker_gone(pid: int, logged_at: float) -> str | None:
    """Why the run worker `pid`, which logged that it started at `logged_at`, is gone (or None)."""
    try:
        started = process_started_at(pid)
    except OSError:
        return None  # no /proc to read: cannot tell
    if started is None:
        return f"its run worker (pid {pid}) is gone, and no code server reported it"
    if started > logged_at + PID_REUSE_SLACK_S:
        return f"its run worker (pid {pid}) is gone; that pid now belongs to a newer process"
    return None


def _launched_run_gone(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    if not launched_by_local_code_server(run.tags):
        return None
    worker = run_worker(instance, run.run_id)
    if worker is None:
        return None  # not started far enough to know its worker: run monitoring's start timeout
    return worker_gone(*worker)


def why_run_is_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, host: str) -> str | None:
    """Why the process of a STARTED run is certainly gone, or None (alive, or not judgeable here)."""
    if PID_TAG in run.tags:
        return _in_process_run_gone(run.tags, host)
    return _launched_run_gone(instance, run)


def reap_dead_runs(instance: dg.DagsterInstance, host: str | None = None,
                   log: logging.Logger | None = None) -> list[DeadRun]:
    """Mark every STARTED run whose process is gone as FAILED; returns what was marked."""
    host = host or hostname()
    reaped = []
    started = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    for record in started:
        reason = why_run_is_dead(instance, record.dagster_run, host)
        if reason is None:
            continue
        # re-read after the process is known dead: a run that ended on its own just before it
        # died has written its final status, and a dead process writes nothing more
        run = instance.get_run_by_id(record.dagster_run.run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED:
            continue
        message = f"{REAPER_NAME}: {reason}; marking the run failed so that it releases its pools"
        instance.report_run_failed(run, message)
        reaped.append(DeadRun(run.run_id, run.job_name, reason))
        if log is not None:
            log.warning(f"run {run.run_id} of {run.job_name}: {message}")
    return reaped


def stale_run_reaper(interval_seconds: int) -> dg.SensorDefinition:
    """The sensor, evaluated every BATCHREC_RUN_REAPER_INTERVAL_SECONDS."""

    @dg.sensor(
        name=REAPER_NAME,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks a STARTED run FAILED once the process that executed it is gone (killed CLI "
                    "run, dead run worker and code server), so it stops holding the training pool.",
    )
    def reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        reaped = reap_dead_runs(context.instance, log=context.log)
        if not reaped:
            return dg.SkipReason("every STARTED run this host can check has a live process")
        return dg.SkipReason("marked failed: " + "; ".join(f"{r.run_id} ({r.reason})" for r in reaped))

    return reaper
