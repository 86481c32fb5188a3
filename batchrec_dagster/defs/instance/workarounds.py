"""Every place batchrec relies on Dagster behaviour that is not public API, in one module.

Each workaround names the Dagster behaviour (1.13.27) it depends on or works around;
tests/defs/instance/test_workarounds.py reproduces each behaviour with Dagster itself and fails
when Dagster changes it, so that the workaround is revisited rather than silently wrong.

1. `launched_by_local_code_server`: DefaultRunLauncher tags each run it launches with where its
   code server listens (`.dagster/grpc_info`, JSON with `host` and `port` or `socket`). A private
   constant; run_reaper reads it to tell a run it can judge (a local worker) from one it cannot.
2. `run_worker`: a run worker's first engine event says "Started process for run (pid: N)."
   (dagster._grpc.impl, dagster._cli.api). Its text is the only record of the worker's PID, which
   DefaultRunLauncher never health-checks (`supports_check_run_worker_health` is False); run_reaper
   fails a STARTED run once that PID is gone.
3. `ensure_pool_limits`: the QueuedRunCoordinatorDaemon reads the configured pools at the start of
   a dequeue pass and only then writes `concurrency.pools.default_limit` for a pool it has never
   seen, so in that first pass the pool is unlimited and every queued run needing it launches at
   once (issue 13). Writing the limit when a run is submitted closes that gap; run_queue.py does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import dagster as dg
from dagster._core.storage.tags import GRPC_INFO_TAG

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# the run worker's first engine event, as Dagster formats it
WORKER_STARTED = "Started process for run (pid: {pid})."
_WORKER_STARTED = re.compile(re.escape(WORKER_STARTED).replace(r"\{pid\}", r"(\d+)"))


def launched_by_local_code_server(tags: Mapping[str, str]) -> bool:
    """Whether DefaultRunLauncher launched the run through a code server on this machine (a socket,
    or a loopback host): then its run worker is a process here (1.)."""
    try:
        info = json.loads(tags.get(GRPC_INFO_TAG) or "")
    except ValueError:
        return False
    return isinstance(info, dict) and ("socket" in info or info.get("host") in LOCAL_HOSTS)


def worker_pid(message: str) -> int | None:
    """The PID in a run worker's "Started process for run" message, or None for any other (2.)."""
    match = _WORKER_STARTED.fullmatch(message)
    return int(match.group(1)) if match else None


def run_worker(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it was logged) of the run worker's "Started process for run" event, if any (2.)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    for record in reversed(records):  # the newest worker, should a run ever get a second one
        event = record.event_log_entry.dagster_event
        pid = worker_pid(event.message or "") if event is not None else None
        if pid is not None:
            return pid, record.event_log_entry.timestamp
    return None


def ensure_pool_limits(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """Give each pool the run needs its default limit if it has no limit yet; returns those pools (3.)."""
    default_limit = instance.global_op_concurrency_default_limit
    pools = run.run_op_concurrency.all_pools if run.run_op_concurrency else None
    storage = instance.event_log_storage
    if default_limit is None or not pools or not storage.supports_global_concurrency_limits:
        return []
    configured = storage.get_concurrency_keys()
    missing = sorted(pool for pool in pools if pool not in configured)
    for pool in missing:
        # the daemon's own call; only for pools without a limit, so one set by hand stays
        storage.initialize_concurrency_limit_to_default(pool)
    return missing
