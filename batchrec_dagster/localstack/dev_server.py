"""`batchrec dev`: run `dagster dev` as a supervised child that a signal always stops, children and all.

Why not exec `dagster dev`: started from a script (`batchrec dev &`), a process inherits SIGINT
*ignored*; `dagster dev` then maps SIGTERM onto that same (ignored) disposition, so neither
signal stops it and only SIGKILL does, which leaves its webserver, daemon and code servers
running. Here:

- `dagster dev` runs in its own process group (its own session). Our SIGINT handler is installed
  before it starts, and a handled signal is reset to the default on exec (an ignored one is
  inherited), so `dagster dev` gets a working Ctrl-C whatever we were started with.
- SIGTERM, SIGINT and SIGHUP to us are forwarded to that group as SIGINT, which is Dagster's
  graceful path (what Ctrl-C in a terminal does): it tells its webserver and daemon to shut down.
- After `grace_s`, or on a second signal, the whole group gets SIGKILL.
- When `dagster dev` has exited, anything of its process group still alive (webserver, daemon,
  code servers and run workers are all started in it) is killed, and we return only once none
  of it is running.

Processes that deliberately detach into a session of their own (the embedded MongoDB) are left
running: they are meant to outlive the command (`batchrec stop` ends it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from batchrec_dagster.cli.materialize import prepare_dagster_home
from batchrec_dagster.localstack.process_groups import kill_all, signal_group
from batchrec_dagster.localstack.processes import group_members, handling
from batchrec_dagster.settings import PROJECT_ROOT, Settings

DEFAULT_GRACE_S = 25.0     # inside Kubernetes' default 30 s termination grace period
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def dagster_dev_command(dagster_args: list[str]) -> list[str]:
    dagster = Path(sys.executable).with_name("dagster")
    executable = str(dagster) if dagster.exists() else "dagster"
    return [executable, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), *dagster_args]


class _Supervisor:
    """Forwards stop signals to the child's process group and enforces the grace period."""

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.process: subprocess.Popen | None = None
        self.stop_requested_at: float | None = None
        self.killed = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            # os.write, not print: a handler that prints while the main thread prints raises
            os.write(2, f"batchrec dev: {signal.Signals(signum).name} received, stopping dagster dev "
                        f"(SIGKILL after {self.grace_s:.0f}s; send it again to kill now)\n".encode())
            self.send(signal.SIGINT)
        else:
            self.kill()

    def send(self, sig: int) -> None:
        if self.process is None:
            return  # not started yet: run_dev sees stop_requested_at
        signal_group(self.process.pid, sig)

    def kill(self) -> None:
        self.killed = True
        self.send(signal.SIGKILL)

    def wait(self) -> int:
        """The child's exit code, once it has exited (forced after the grace period)."""
        assert self.process is not None
        while True:
            try:
                return self.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            if (self.stop_requested_at is not None and not self.killed
                    and time.monotonic() - self.stop_requested_at > self.grace_s):
                print(f"batchrec dev: dagster dev did not stop in {self.grace_s:.0f}s; killing it",
                      flush=True)
                self.kill()

    def clean_up(self, pgid: int) -> None:
        """SIGKILL whatever of `dagster dev` is still running; return once none of it is
        (ProcessStopError if anything outlives SIGKILL)."""
        left = group_members(pgid)
        if not left:
            return
        print(f"batchrec dev: killing {len(left)} leftover process(es): {sorted(left)}", flush=True)
        kill_all(left)


def _ensure_local_mongo(settings: Settings) -> None:
    if settings.deployment == "local" and not settings.mongodb_uri:
        from batchrec_dagster.sources.embedded_mongo import ensure_embedded_mongo

        uri = ensure_embedded_mongo(settings.mongo_data_dir, settings.mongo_port)
        print(f"embedded MongoDB at {uri} (data in {settings.mongo_data_dir})")


def run_dev(settings: Settings, dagster_args: list[str], *, grace_s: float = DEFAULT_GRACE_S,
            command: list[str] | None = None) -> int:
    """Run `dagster dev` until it exits or we are signalled. Returns its exit code, or after a
    stop we asked for: 0 if it stopped within `grace_s`, 1 if it had to be killed.

    The instance folder is prepared here (materialize.prepare_dagster_home). `command` replaces
    `dagster dev` (tests)."""
    home = prepare_dagster_home(settings)
    _ensure_local_mongo(settings)
    supervisor = _Supervisor(grace_s)
    # handlers first: a handled signal is reset to the default in the child at exec
    with handling(dict.fromkeys(_FORWARDED, supervisor.on_signal)):
        if supervisor.stop_requested_at is not None:
            return 0
        print(f"DAGSTER_HOME={home}; starting `dagster dev` "
              f"(Ctrl-C or SIGTERM stops it and everything it started)", flush=True)
        supervisor.process = subprocess.Popen(command or dagster_dev_command(dagster_args),
                                              cwd=PROJECT_ROOT, start_new_session=True)
        pgid = supervisor.process.pid
        if supervisor.stop_requested_at is not None:  # signalled while it was being started
            supervisor.send(signal.SIGKILL if supervisor.killed else signal.SIGINT)
        try:
            code = supervisor.wait()
        finally:
            supervisor.clean_up(pgid)
    if supervisor.stop_requested_at is not None:
        print("batchrec dev: stopped" + (" (killed)" if supervisor.killed else ""), flush=True)
        return 1 if supervisor.killed else 0
    return code
