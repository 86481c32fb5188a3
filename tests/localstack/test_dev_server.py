"""`batchrec dev` stops on SIGTERM (and Ctrl-C) with every process it started, however it was started.

Started from a script (`batchrec dev &`), a process inherits SIGINT ignored; `dagster dev` used to
map SIGTERM onto that, so neither signal stopped it and only SIGKILL did, leaving its webserver,
daemon and code servers behind (issue 13 point 11, issue 12 part 3).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import requests

from batchrec_dagster.localstack.process_groups import kill_all, signal_group
from batchrec_dagster.localstack.processes import cmdline, descendants, is_running
from tests.harness.dagster_services import wait_for
from tests.harness.servers import free_port

BATCHREC = str(Path(sys.executable).with_name("batchrec"))
STOP_BOUND_S = 60  # grace period (25 s) + SIGKILL and the wait for it, with room on a busy machine


def _env(tmp_path: Path, mongo_uri: str) -> dict[str, str]:
    env = {**os.environ, "BATCHREC_HOME": str(tmp_path / "home"), "MONGODB_URI": mongo_uri,
           "MONGODB_DATABASE": f"t_{uuid.uuid4().hex[:12]}", "BATCHREC_DEPLOYMENT": "local"}
    env.pop("DAGSTER_HOME", None)
    return env


def _sigint_ignored(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return bool(mask & (1 << (signal.SIGINT - 1)))


def _services_up(pid: int, url: str) -> set[int] | None:
    """All descendants, once the webserver answers and the daemon and a code server run."""
    try:
        if requests.get(f"{url}/server_info", timeout=2).status_code != 200:
            return None
    except requests.RequestException:
        return None
    tree = descendants(pid)
    commands = [" ".join(cmdline(p) or []) for p in tree]
    wanted = ("dagster_webserver", "dagster._daemon", "code-server")
    return tree if all(any(w in c for c in commands) for w in wanted) else None


def _wait_until_up(pid: int, port: int, log: Path) -> set[int]:
    return wait_for("dagster dev's webserver, daemon and code server",
                    lambda: _services_up(pid, f"http://127.0.0.1:{port}"), 240, interval_s=2,
                    on_timeout=lambda: _log(log))


def _assert_gone(tree: set[int], log: Path) -> None:
    left = {p for p in tree if is_running(p)}
    assert not left, f"still running after the stop: {left}\n{_log(log)}"


def _at_least(n: int, pids: set[int]) -> set[int] | None:
    return pids if len(pids) >= n else None


def _end(process: subprocess.Popen) -> None:
    """Stop a process the test started (its whole session), reap it, close its pipe."""
    if process.poll() is None:
        signal_group(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def _log(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def test_a_shell_background_job_starts_with_sigint_ignored(tmp_path):
    """The premise of the test below, checked on this machine's bash."""
    process = subprocess.Popen(["bash", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        pid = int(process.stdout.readline())
        wait_for("the job to exec sleep", lambda: (cmdline(pid) or [""])[0] == "sleep", 10, interval_s=0.05)
        assert _sigint_ignored(pid)
    finally:
        _end(process)


@pytest.mark.slow
def test_dev_started_from_a_script_stops_on_sigterm_with_all_children(tmp_path, mongo_server_uri):
    port, log = free_port(), tmp_path / "dev.log"
    # exactly as a script would: a background job (SIGINT ignored), then `wait` for it
    script = f'"{BATCHREC}" dev -- -h 127.0.0.1 -p {port} > "{log}" 2>&1 & echo $!; wait $!'
    shell = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True,
                             env=_env(tmp_path, mongo_server_uri), start_new_session=True)
    pid = int(shell.stdout.readline())
    tree: set[int] = set()
    try:
        tree = _wait_until_up(pid, port, log)
        os.kill(pid, signal.SIGTERM)
        assert shell.wait(timeout=STOP_BOUND_S) == 0, _log(log)  # bash exits with batchrec's code
        assert not is_running(pid)
        _assert_gone(tree, log)
    finally:
        kill_all(tree | {pid})
        _end(shell)


@pytest.mark.slow
def test_dev_started_interactively_stops_on_ctrl_c(tmp_path, mongo_server_uri):
    port, log = free_port(), tmp_path / "dev.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([BATCHREC, "dev", "--", "-h", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=_env(tmp_path, mongo_server_uri), start_new_session=True)
    tree: set[int] = set()
    try:
        tree = _wait_until_up(process.pid, port, log)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: SIGINT to the foreground group
        assert process.wait(timeout=STOP_BOUND_S) == 0, _log(log)
        _assert_gone(tree, log)
    finally:
        kill_all(tree)
        _end(process)


_STUBBORN = """
import signal, subprocess, sys, time
# the fault: a `dagster dev` that ignores the graceful SIGINT, with a child that does too
signal.signal(signal.SIGINT, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
time.sleep(300)
"""


def test_a_child_that_ignores_the_stop_is_killed_with_its_children_after_the_grace_period(tmp_path):
    # A hung shutdown cannot be caused in the real dagster dev on demand, so a real process that
    # ignores SIGINT stands in for it (run_dev's `command`); everything else runs for real.
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(_STUBBORN)
    runner = textwrap.dedent(f"""
        import sys
        from batchrec_dagster.localstack.dev_server import run_dev
        from batchrec_dagster.settings import load_settings
        sys.exit(run_dev(load_settings(), [], grace_s=1.0, command=[sys.executable, {str(stubborn)!r}]))
    """)
    env = {**os.environ, "MONGODB_URI": "mongodb://127.0.0.1:1", "BATCHREC_HOME": str(tmp_path)}
    log = tmp_path / "runner.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", runner], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    tree: set[int] = set()
    try:
        tree = wait_for("the stand-in and its child", lambda: _at_least(2, descendants(process.pid)),
                        60, interval_s=0.2, on_timeout=lambda: _log(log))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 1, _log(log)   # 1: it had to be killed
        assert "did not stop in 1s; killing it" in _log(log)
        _assert_gone(tree, log)
    finally:
        kill_all(tree)
        _end(process)


@pytest.mark.slow
def test_dev_with_an_exported_dagster_home_without_dagster_yaml_runs_with_the_training_pool(
        tmp_path, mongo_server_uri):
    """Issue 18, D7: `export DAGSTER_HOME=...` (as the README says) with no dagster.yaml there used to
    start Dagit and the daemon without the run queue and pool limit, and only Dagster warned."""
    port, log = free_port(), tmp_path / "dev.log"
    exported = tmp_path / "exported_home"
    env = {**_env(tmp_path, mongo_server_uri), "DAGSTER_HOME": str(exported)}
    with open(log, "wb") as out:
        process = subprocess.Popen([BATCHREC, "dev", "--", "-h", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    tree: set[int] = set()
    try:
        tree = _wait_until_up(process.pid, port, log)
        query = "{ instance { info poolConfig { poolGranularity defaultPoolLimit } } }"
        instance = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": query},
                                 timeout=60).json()["data"]["instance"]
        assert str(exported) in instance["info"]  # the webserver runs on the exported home
        assert instance["poolConfig"] == {"poolGranularity": "run", "defaultPoolLimit": 1}, _log(log)
        lines = log.read_text(errors="replace").splitlines()
        copied = [line for line in lines if "had no dagster.yaml" in line]
        assert copied == [f"DAGSTER_HOME {exported} had no dagster.yaml: copied batchrec's there "
                          f"(run queue, one training run at a time)"]
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=STOP_BOUND_S) == 0, _log(log)
        _assert_gone(tree, log)
    finally:
        kill_all(tree)
        _end(process)
