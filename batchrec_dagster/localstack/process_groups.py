"""Stopping a child process, or a service together with everything it started, and checking they are gone.

The long-lived services of `batchrec prod-stack` (code server, webserver, daemon) each run in a
process group of their own, so that stopping one also stops what it started: the code server's
gRPC child and the run workers it launches. `batchrec dev` and the tests' servers stop their
children here too. Built on processes.py (signal, wait with a deadline, SIGKILL). Linux: group
members are read from /proc.

The children are waited on through their `Popen`, which reaps them and keeps their exit status;
processes.stop_process, by PID, would reap them itself and leave `Popen` without it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable

from batchrec_dagster.localstack.processes import ProcessStopError, group_members, is_running, stop_process

KILL_WAIT_S = 10.0


def wait_all_gone(pids: Iterable[int], timeout_s: float) -> list[int]:
    """Poll until none of `pids` runs or the deadline passes; the ones still running."""
    deadline = time.monotonic() + timeout_s
    pids = set(pids)
    while True:
        alive = sorted(pid for pid in pids if is_running(pid))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)  # polling interval, not synchronisation


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to every process of group `pgid`; nothing when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def kill_all(pids: Iterable[int], timeout_s: float = KILL_WAIT_S) -> None:
    """SIGKILL each of `pids` that still runs, by PID, and return once none does.

    Raises ProcessStopError if any outlives SIGKILL by `timeout_s`."""
    pids = set(pids)
    for pid in sorted(pids):  # by PID: a member that moved to a group of its own is still ours
        stop_process(pid, grace_s=0, kill_wait_s=timeout_s, first_signal=signal.SIGKILL)
    left = wait_all_gone(pids, timeout_s=timeout_s)
    if left:
        raise ProcessStopError(f"processes {left} outlived SIGKILL")


def terminate(process: subprocess.Popen, timeout_s: float = 10.0, kill_wait_s: float = KILL_WAIT_S) -> bool:
    """SIGTERM to `process`, SIGKILL after `timeout_s`; returns once it is reaped.

    True when it exited on SIGTERM (or had already exited), False when it had to be killed.
    Raises subprocess.TimeoutExpired if even SIGKILL did not end it within `kill_wait_s`."""
    process.terminate()  # a no-op once Popen has seen it exit
    return _wait_or_kill(process, timeout_s, kill_wait_s)


def _wait_or_kill(process: subprocess.Popen, timeout_s: float, kill_wait_s: float) -> bool:
    try:
        process.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        process.kill()  # through Popen, which reaps its own child and keeps its exit status
        process.wait(timeout=kill_wait_s)
        return False


def stop_process_groups(*processes: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Stop children started with `start_new_session=True` and every process of their groups.

    SIGTERM to every group first (the services shut down cleanly on it, side by side), then each
    leader is waited on; SIGKILL to a leader still running after `timeout_s`, and by PID to
    whatever of its group is left. Raises ProcessStopError if anything outlives SIGKILL.
    """
    members = {p.pid: group_members(p.pid) - {p.pid} for p in processes}  # a leader's pgid is its pid
    for process in processes:
        signal_group(process.pid, signal.SIGTERM)
    for process in processes:
        pgid = process.pid
        _wait_or_kill(process, timeout_s, KILL_WAIT_S)
        group = members[pgid] | group_members(pgid)
        left = wait_all_gone(group, timeout_s=5)  # the leader's children may exit just after it
        kill_all(set(left) | group_members(pgid))

