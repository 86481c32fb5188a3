"""Stopping a benchmark's embedded MongoDB for sure: by its PID, SIGKILL when SIGTERM is lost
(nx-27017 sometimes swallows it), and waiting until the process is gone."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded MongoDB by its PID and wait until it is gone (SIGKILL if SIGTERM is lost,
    which nx-27017 sometimes does)."""
    from batchrec_dagster.sources.embedded_mongo import OWNER_PID_FILE

    pid_file = data_dir / OWNER_PID_FILE
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip())
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
            except ChildProcessError:
                pass
            if not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid):
                return
            time.sleep(0.1)
    raise RuntimeError(f"embedded MongoDB {pid} did not stop")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"
