"""Which process runs a Dagster run, and whether that very process is still alive.

`batchrec materialize` runs the job in its own process (`execute_in_process`), so no run worker
exists that Dagster's run monitoring could ask about: killed, its run would stay STARTED forever
and hold the `training` pool. The CLI therefore tags its runs with this host, its PID and the
process's start time; `run_reaper` compares them with /proc. The start time (boot id + start ticks
from /proc/<pid>/stat) tells a reused PID apart from the process that ran the run.

Everything here answers "gone" only when it is certain; whatever it cannot judge (another host, a
system without /proc) counts as alive, so a live run is never failed by mistake.
"""

from __future__ import annotations

import os
import socket
from enum import Enum
from pathlib import Path

HOST_TAG = "batchrec/host"
PID_TAG = "batchrec/pid"
PROCESS_START_TAG = "batchrec/process_start"
PROC = Path("/proc")


class ProcessState(Enum):
    ALIVE = "alive"        # the same process (same start time) still runs
    GONE = "gone"          # no such process, a zombie, or the PID now belongs to another process
    UNKNOWN = "unknown"    # cannot be judged here (no /proc, permission denied)


def hostname() -> str:
    return socket.gethostname()


def _boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; None when the process does not exist."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    return stat.rsplit(")", 1)[1].split()


def process_start(pid: int) -> str | None:
    """`<boot id>:<start ticks>` of a live process; None when it does not exist or is a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22, starttime, in clock ticks after boot


def _require_proc() -> None:
    if not (PROC / "self" / "stat").exists():
        raise OSError("no /proc on this system: processes cannot be told apart")


def process_started_at(pid: int) -> float | None:
    """The epoch second a live process started (to within a second), or None when it is gone.

    Raises OSError where there is no /proc to read (so nothing is ever judged gone there)."""
    _require_proc()
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    boot_time = next(float(line.split()[1]) for line in (PROC / "stat").read_text().splitlines()
                     if line.startswith("btime "))
    return boot_time + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_state(pid: int, expected_start: str | None) -> ProcessState:
    """Whether the process `pid` that started at `expected_start` (see process_start) still runs."""
    if pid <= 0:
        return ProcessState.UNKNOWN
    try:
        _require_proc()
    except OSError:  # no /proc (macOS): existence is all that can be seen
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return ProcessState.GONE
        except PermissionError:
            return ProcessState.UNKNOWN
        return ProcessState.UNKNOWN
    try:
        start = process_start(pid)
    except PermissionError:
        return ProcessState.UNKNOWN
    if start is None:
        return ProcessState.GONE
    if expected_start and start != expected_start:
        return ProcessState.GONE  # the PID was reused by a process that started later
    return ProcessState.ALIVE


def current_process_tags() -> dict[str, str]:
    """Run tags naming this process, for runs executed in it (`execute_in_process`)."""
    pid = os.getpid()
    return {HOST_TAG: hostname(), PID_TAG: str(pid), PROCESS_START_TAG: process_start(pid) or ""}
