"""Stopping child processes for sure: by PID, with escalation, and checking that they are gone.

Long-lived services (code server, webserver, daemon) run in their own process group, so that the
processes they start themselves (the code server's gRPC child and the run workers it launches)
are stopped with them. Linux: the group's members are read from /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

PROC = Path("/proc")


def pid_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone: it has exited, only its parent has not reaped
    it yet (a daemonized server's parent is init, which may reap late in a container)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (non-zombie) processes in process group `pgid` (empty without /proc)."""
    members = []
    for entry in PROC.glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        # fields after the command: state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Poll until none of `pids` is alive or the deadline passes; return those still alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)  # poll interval


def stop_process_group(process: subprocess.Popen, timeout_s: float = 30.0,
                       sig: int = signal.SIGTERM) -> None:
    """Stop a child started with `start_new_session=True` and every process of its group.

    `sig` first (the services shut down cleanly on SIGTERM), SIGKILL to what is left after
    `timeout_s`. Raises RuntimeError if anything of the group survives SIGKILL.
    """
    pgid = process.pid  # a session leader's group id is its pid
    known = set(group_members(pgid)) | {pgid}
    _signal_group(pgid, sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    known |= set(group_members(pgid))
    left = wait_gone(sorted(known), timeout_s=5)  # the leader's children may exit just after it
    if left:
        _signal_group(pgid, signal.SIGKILL)
        for pid in left:
            _kill(pid, signal.SIGKILL)  # a member that moved to another group is still ours
        left = wait_gone(left, timeout_s=10)
    if process.poll() is None:
        process.wait(timeout=10)
    if left:
        raise RuntimeError(f"processes {left} of group {pgid} survived SIGKILL")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
