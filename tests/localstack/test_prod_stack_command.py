"""`batchrec prod-stack` refuses clearly, and leaves nothing behind, when it cannot start."""

from __future__ import annotations

import fcntl
import signal
from pathlib import Path

import pytest

from batchrec_dagster.cli.commands import build_parser, main
from batchrec_dagster.settings import get_settings


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BATCHREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MONGODB_URI", "mongodb://127.0.0.1:9/")  # set, so no embedded server; never contacted
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_command_is_wired() -> None:
    args = build_parser().parse_args(["prod-stack", "--home", "h", "-p", "3100", "--postgres-dsn", "postgresql://u@h/d"])
    assert callable(args.func) and args.port == 3100 and args.postgres_dsn == "postgresql://u@h/d"


def test_without_postgres_binaries_it_says_so(cli_env: Path, capsys) -> None:
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    argv = ["prod-stack", "--home", str(cli_env / "stack"), "--pg-bin", str(cli_env / "no-postgres")]
    assert main(argv) == 1
    assert "PostgreSQL binaries (initdb, pg_ctl) not found" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert not (cli_env / "stack").exists()


def test_a_second_stack_on_the_same_home_is_refused(cli_env: Path, capsys) -> None:
    home = cli_env / "stack"
    home.mkdir()
    with open(home / "prod-stack.lock", "w") as lock:  # the first stack holds it while it runs
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (home / "state.json").write_text('{"the": "first stack\'s"}')
        code = main(["prod-stack", "--home", str(home), "--postgres-dsn", "postgresql://u:p@127.0.0.1:9/d"])
    captured = capsys.readouterr()
    assert code == 1 and f"another prod-stack runs from {home}" in captured.err
    assert (home / "state.json").read_text() == '{"the": "first stack\'s"}'  # not ours to overwrite
    assert not (home / "logs" / "daemon.log").exists()  # nothing was started
