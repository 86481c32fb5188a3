"""Stop a process for sure, and tell whether a PID still names a live process.

Why this exists: a SIGTERM is a request, not a guarantee. nx-27017 sometimes survives it (its
handler raises SystemExit, which Python ignores when it lands inside a `__del__`); `dagster dev`
started from a script ignores it. And a PID read from a file may belong to another process by
now. So: signal, wait on the PID with a deadline, escalate to SIGKILL, wait until it is gone.

Waiting uses a pidfd where the kernel has them (Linux >= 5.3): signals go to that exact process
even if its PID is reused meanwhile, and `poll` wakes when it exits, for children and
non-children alike. Elsewhere it polls /proc (or `kill(pid, 0)`). A zombie counts as gone: it
runs nothing and holds nothing but its PID; our own children are reaped.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

SignalHandler = Callable[[int, FrameType | None], object]

_PROC = Path("/proc")
_POLL_S = 0.02


class ProcessStopError(RuntimeError):
    """A process outlived SIGKILL and its deadline (e.g. stuck in uninterruptible I/O)."""


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None if absent."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # the name may hold spaces and parentheses


def _reap(pid: int) -> bool:
    """Reap `pid` if it is our exited child. True when it is no longer running as our child."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child (or already reaped): the caller looks elsewhere
    return done == pid


def is_running(pid: int) -> bool:
    """Whether `pid` names a process that has not exited (a zombie has). Reaps our own zombies."""
    if pid <= 0:
        return False
    if _reap(pid):
        return False
    if _PROC.is_dir():
        fields = _stat_fields(pid)
        return fields is not None and fields[0] not in ("Z", "X", "x")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> list[str] | None:
    """The command line of a running process, None when there is none (or it cannot be read)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]] or None


def process_group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def start_ticks(pid: int) -> int | None:
    """When a running process started, in clock ticks after boot (/proc/<pid>/stat field 22);
    None when it does not run. With the PID it names one process: a reused PID starts later."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and fields[0] not in ("Z", "X", "x") else None


def _all_pids() -> list[int]:
    return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]


def children(pid: int) -> set[int]:
    """The running processes whose parent is `pid`."""
    return {other for other in _all_pids() if parent_of(other) == pid and is_running(other)}


def descendants(pid: int) -> set[int]:
    """Every running process below `pid` in the process tree (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for other in _all_pids():
        parent = parent_of(other)
        if parent is not None:
            children.setdefault(parent, []).append(other)
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and is_running(child):
                found.add(child)
                stack.append(child)
    return found


def group_members(pgid: int) -> set[int]:
    """The running processes of a process group."""
    return {pid for pid in _all_pids() if process_group(pid) == pgid and is_running(pid)}


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd support, or already gone
        return None


def wait_gone(pid: int, timeout_s: float, *, pidfd: int | None = None) -> bool:
    """Wait until `pid` has exited (reaping it if it is our child). False at the deadline."""
    deadline = time.monotonic() + timeout_s
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll(max(0.0, timeout_s) * 1000)  # readable once the process has exited
    while is_running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)  # polling interval of the fallback path (no pidfd), not synchronisation
    return True


def _signal(pid: int, sig: int, pidfd: int | None) -> bool:
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_process(pid: int, *, grace_s: float = 10.0, kill_wait_s: float = 10.0,
                 first_signal: int = signal.SIGTERM) -> str:
    """Stop `pid`: `first_signal`, wait up to `grace_s`, then SIGKILL and wait up to `kill_wait_s`.

    Returns "not_running", "exited" (it obeyed the first signal) or "killed". Raises
    ProcessStopError if the process is still there after SIGKILL. Check the PID's identity
    before calling: this signals whatever process the PID names now.
    """
    if not is_running(pid):
        return "not_running"
    pidfd = _open_pidfd(pid)
    try:
        if not _signal(pid, first_signal, pidfd):
            wait_gone(pid, kill_wait_s)
            return "not_running"
        if wait_gone(pid, grace_s, pidfd=pidfd):
            return "exited"
        _signal(pid, signal.SIGKILL, pidfd)
        if not wait_gone(pid, kill_wait_s, pidfd=pidfd):
            raise ProcessStopError(f"process {pid} is still running {kill_wait_s:.0f}s after SIGKILL")
        return "killed"
    finally:
        if pidfd is not None:
            os.close(pidfd)


@contextmanager
def handling(handlers: Mapping[int, SignalHandler]) -> Iterator[None]:
    """Install `handlers` (signal -> handler) for the block and put the previous dispositions back
    after it, whatever happens inside. A supervisor installs its own handlers before it starts
    children: exec resets a handled signal to its default in the child, while an ignored one
    (SIG_IGN, as a shell gives `cmd &`) would stay ignored there."""
    previous: dict[int, object] = {}
    try:
        for sig, handler in handlers.items():
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
