"""Which process runs a Dagster run, and whether that very process is still alive.

`batchrec materialize` runs the job in its own process (`execute_in_process`), so no run worker
exists that Dagster's run monitoring could ask about: killed, its run would stay STARTED forever
and hold the `training` pool. The CLI therefore tags its runs with this host, its PID and the
process's start time; `run_reaper` compares them with /proc. The start time (boot id + start ticks,
processes.start_ticks) tells a reused PID apart from the process that ran the run.

Everything here answers "gone" only when it is certain; whatever it cannot judge (another host, a
system without /proc) is not gone, so a live run is never failed by mistake.
"""

from __future__ import annotations

import os
import socket
from enum import Enum
from pathlib import Path

from batchrec_dagster.localstack.processes import is_running, start_ticks

HOST_TAG = "batchrec/host"
PID_TAG = "batchrec/pid"
PROCESS_START_TAG = "batchrec/process_start"
PROC = Path("/proc")


class ProcessState(Enum):
    ALIVE = "alive"        # the same process (same start time) still runs
    GONE = "gone"          # no such process, a zombie, or the PID now belongs to another process
    UNKNOWN = "unknown"    # cannot be judged here (no /proc)


def hostname() -> str:
    return socket.gethostname()


def _require_proc() -> None:
    if not (PROC / "self" / "stat").exists():
        raise OSError("no /proc on this system: processes cannot be told apart")


def process_start(pid: int) -> str | None:
    """`<boot id>:<start ticks>` of a running process; None when it does not run (or no /proc)."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    try:
        boot_id = (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    return f"{boot_id}:{ticks}"


def process_started_at(pid: int) -> float | None:
    """The epoch second a running process started (to within a second), or None when it is gone.

    Raises OSError where there is no /proc to read (so nothing is ever judged gone there)."""
    _require_proc()
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    boot_time = next(float(line.split()[1]) for line in (PROC / "stat").read_text().splitlines()
                     if line.startswith("btime "))
    return boot_time + ticks / os.sysconf("SC_CLK_TCK")


def process_state(pid: int, expected_start: str | None) -> ProcessState:
    """Whether the process `pid` that started at `expected_start` (see process_start) still runs."""
    if pid <= 0:
        return ProcessState.UNKNOWN
    try:
        _require_proc()
    except OSError:  # (macOS) existence is all that can be seen, not whether the PID was reused
        return ProcessState.UNKNOWN if is_running(pid) else ProcessState.GONE
    start = process_start(pid)
    if start is None:
        return ProcessState.GONE
    if expected_start and start != expected_start:
        return ProcessState.GONE  # the PID was reused by a process that started later
    return ProcessState.ALIVE


def current_process_tags() -> dict[str, str]:
    """Run tags naming this process, for runs executed in it (`execute_in_process`)."""
    pid = os.getpid()
    return {HOST_TAG: hostname(), PID_TAG: str(pid), PROCESS_START_TAG: process_start(pid) or ""}
