"""Stopping a service together with everything it started, by PID, and checking they are gone.

The long-lived services of `batchrec prod-stack` (code server, webserver, daemon) each run in a
process group of their own, so that stopping one also stops what it started: the code server's
gRPC child and the run workers it launches. Built on processes.py (signal, wait with a deadline,
SIGKILL). Linux: group members are read from /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable

from batchrec_dagster.localstack.processes import ProcessStopError, group_members, is_running, stop_process


def wait_all_gone(pids: Iterable[int], timeout_s: float) -> list[int]:
    """Poll until none of `pids` runs or the deadline passes; the ones still running."""
    deadline = time.monotonic() + timeout_s
    pids = set(pids)
    while True:
        alive = sorted(pid for pid in pids if is_running(pid))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)  # polling interval, not synchronisation


def stop_process_group(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Stop a child started with `start_new_session=True` and every process of its group.

    SIGTERM to the group (the services shut down cleanly on it), SIGKILL to whatever is left after
    `timeout_s`. Raises ProcessStopError if anything of the group outlives SIGKILL.
    """
    pgid = process.pid  # a session leader's group id is its pid
    members = group_members(pgid) - {pgid}
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()  # through Popen, which reaps its own child and keeps its exit status
        process.wait(timeout=10)
    members |= group_members(pgid)
    left = wait_all_gone(members, timeout_s=5)  # the leader's children may exit just after it
    for pid in left:  # by PID: a member that moved to a group of its own is still ours
        stop_process(pid, grace_s=0, first_signal=signal.SIGKILL)
    left = wait_all_gone(members | group_members(pgid), timeout_s=10)
    if left:
        raise ProcessStopError(f"processes {left} of group {pgid} outlived SIGKILL")
