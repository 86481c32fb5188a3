"""The embedded server started on demand: reuse by the same home, refusal of a foreign server, a
stop that always ends the process, and recovery from a stale PID file."""

import os
import signal
import subprocess

import pytest

from batchrec_dagster.localstack.process_groups import terminate
from batchrec_dagster.localstack.processes import is_running, wait_gone
from batchrec_dagster.sources.embedded_mongo import (
    NX_PID_FILE,
    OWNER_PID_FILE,
    EmbeddedMongoError,
    ensure_embedded_mongo,
    is_serving,
    stop_embedded_mongo,
)
from batchrec_dagster.sources.mongo import connect
from tests.harness.servers import free_port


def _server_pid(home) -> int:
    return int((home / OWNER_PID_FILE).read_text())


def test_started_once_reused_and_foreign_homes_refused(tmp_path):
    port = free_port()
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    uri = ensure_embedded_mongo(home_a, port)
    pid = _server_pid(home_a)
    try:
        client = connect(uri)
        client.batchrec.probe.insert_one({"home": "a"})
        assert ensure_embedded_mongo(home_a, port) == uri          # found running, not restarted
        assert _server_pid(home_a) == pid
        assert client.batchrec.probe.count_documents({"home": "a"}) == 1
        with pytest.raises(EmbeddedMongoError, match="not the embedded MongoDB of"):
            ensure_embedded_mongo(home_b, port)
        client.close()
    finally:
        assert stop_embedded_mongo(home_a)
    # stop returns only once the process is gone: no polling needed here (this was the flake)
    assert not is_running(pid)
    assert not is_serving(uri)
    assert not stop_embedded_mongo(home_a)                          # nothing left to stop


def test_stop_escalates_to_sigkill_when_sigterm_is_not_acted_on(tmp_path):
    # nx-27017 sometimes swallows SIGTERM (its handler's SystemExit raised inside a __del__ is
    # ignored). A stopped (SIGSTOP) process reproduces that for real: SIGTERM stays pending, only
    # SIGKILL ends it.
    home, port = tmp_path / "home", free_port()
    uri = ensure_embedded_mongo(home, port)
    pid = _server_pid(home)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert stop_embedded_mongo(home, grace_s=1.0)
    finally:
        if is_running(pid):  # only if the assertion above failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)
    assert not is_running(pid)
    assert not is_serving(uri)


def test_stale_pid_files_of_a_reused_pid_are_recovered(tmp_path):
    """After kill -9 the PID files stay; when an unrelated process has taken that PID, the next
    command must start a fresh server (and leave the unrelated process alone)."""
    home, port = tmp_path / "home", free_port()
    uri = ensure_embedded_mongo(home, port)
    old_pid = _server_pid(home)
    os.kill(old_pid, signal.SIGKILL)
    assert wait_gone(old_pid, 10)
    assert (home / NX_PID_FILE).exists()  # what kill -9 leaves behind

    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # the PID was reused by an unrelated process: write its PID where the server's was
        (home / NX_PID_FILE).write_text(str(unrelated.pid))
        (home / OWNER_PID_FILE).write_text(str(unrelated.pid))
        assert not stop_embedded_mongo(home)      # not ours: never signalled
        assert unrelated.poll() is None

        assert ensure_embedded_mongo(home, port) == uri
        new_pid = _server_pid(home)
        assert new_pid != unrelated.pid
        assert is_serving(uri)
        client = connect(uri)
        assert client.batchrec.command("ping")["ok"] == 1
        client.close()
        assert stop_embedded_mongo(home)
        assert not is_running(new_pid)
        assert unrelated.poll() is None           # still running, untouched
    finally:
        terminate(unrelated)
        stop_embedded_mongo(home)  # a no-op unless an assertion above failed
    assert not is_running(unrelated.pid)


def test_a_live_server_of_this_home_on_another_port_is_named(tmp_path):
    home = tmp_path / "home"
    port, other_port = free_port(), free_port()
    ensure_embedded_mongo(home, port)
    pid = _server_pid(home)
    try:
        with pytest.raises(EmbeddedMongoError, match=f"PID {pid} on port {port}"):
            ensure_embedded_mongo(home, other_port)
    finally:
        assert stop_embedded_mongo(home)
    assert not is_running(pid)


def test_a_command_that_starts_the_server_says_so(tmp_path, monkeypatch, capsys, fresh_settings):
    """Issue 18 (friction): `batchrec registry` after `batchrec stop` started the embedded MongoDB
    again, silently, and left it running. It still starts it (the command needs it), in one line."""
    from batchrec_dagster.cli.commands import main
    from batchrec_dagster.settings import get_settings

    port = free_port()
    monkeypatch.setenv("BATCHREC_DEPLOYMENT", "local")
    monkeypatch.setenv("BATCHREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BATCHREC_MONGO_PORT", str(port))
    monkeypatch.delenv("MONGODB_URI", raising=False)
    data_dir = get_settings().mongo_data_dir
    try:
        assert main(["registry"]) == 0
        captured = capsys.readouterr()
        [line] = [x for x in captured.err.splitlines() if "embedded MongoDB" in x]
        pid = _server_pid(data_dir)
        assert line.startswith(f"started the embedded MongoDB (PID {pid}, port {port}")
        assert "batchrec stop" in line
        assert "started" not in captured.out
        assert main(["registry"]) == 0            # already running: nothing to say
        assert "embedded MongoDB" not in capsys.readouterr().err
    finally:
        assert main(["stop"]) == 0
    assert not is_running(pid)
