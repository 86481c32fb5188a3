"""A user's mistake on the `batchrec` command line is one line on stderr and exit code 1, never a
traceback (issue 18, D14); a reader that stops early (`batchrec ... | head`) is not an error.

Each case runs the real `batchrec` executable as a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from batchrec_dagster.settings import PARTITION_KEY_FORMAT, PARTITION_TIMEZONE

BATCHREC = str(Path(sys.executable).with_name("batchrec"))


def _env(tmp_path: Path, mongo_uri: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "BATCHREC_HOME": str(tmp_path / "home"), "MONGODB_URI": mongo_uri,
           "MONGODB_DATABASE": f"t_{uuid.uuid4().hex[:12]}", "BATCHREC_DEPLOYMENT": "local", **extra}
    env.pop("DAGSTER_HOME", None)
    return env


def _batchrec(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([BATCHREC, *args], env=env, text=True, timeout=180, **kwargs)


def _current_hour() -> str:
    """The KST hour that is running now: it has not ended, so it cannot be materialized."""
    return datetime.now(ZoneInfo(PARTITION_TIMEZONE)).strftime(PARTITION_KEY_FORMAT[:-2] + "00")


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# (argv, extra environment, what the one line says); {tmp} is the test's tmp_path
MISTAKES = [
    (["materialize", "--partition", "garbage"], {}, "'garbage' is not an hour's partition key"),
    (["materialize", "--partition", "NOW"], {}, "has not ended yet; the latest closed hour is"),
    (["materialize", "--partition", "2020-01-01-00:00"], {}, "before the first partition"),
    (["evaluate", "--partition", "2026-03-01-20:30"], {}, "is not an hour's partition key"),
    (["settings"], {"BATCHREC_API_KEYS": "k:plaintext"}, "BATCHREC_API_KEYS"),
    (["materialize", "--partition", "garbage"], {"BATCHREC_API_KEYS": "k:plaintext"}, "not a plaintext key"),
    (["registry"], {"BATCHREC_FULL_RUN_HOUR": "25"}, "BATCHREC_FULL_RUN_HOUR='25'"),
    (["materialize", "--epochs", "0"], {}, "invalid run config of recvae_model: epochs"),
    (["materialize", "--run-config", "{tmp}/missing.json"], {}, "missing.json: No such file"),
    (["materialize", "--run-config", "BADJSON"], {}, "not JSON"),
    (["materialize", "--run-config", "UNKNOWN"], {}, 'unexpected config entry "epochz"'),
    (["import-csv", "{tmp}/nothing.csv"], {}, "nothing.csv: no such file"),
    (["import-csv", "STARS", "--time-end", "yesterday"], {}, "--time-end 'yesterday' is not an ISO time"),
    (["load-demo", "--users", "3"], {}, "a demo needs >= 10 users"),
    (["recommend", "--user", "someone", "-k", "0"], {}, "-k must be at least 1"),
]


@pytest.mark.parametrize(("argv", "extra", "message"), MISTAKES,
                         ids=[" ".join(m[0]) + (" +env" if m[1] else "") for m in MISTAKES])
def test_a_mistake_is_one_line_and_exit_code_1(tmp_path, mongo_server_uri, argv, extra, message):
    files = {"NOW": _current_hour(), "BADJSON": _write(tmp_path / "bad.json", "{not json"),
             "UNKNOWN": _write(tmp_path / "unknown.json",
                               json.dumps({"ops": {"recvae_model": {"config": {"epochz": 3}}}})),
             "STARS": _write(tmp_path / "stars.csv", "user,repo\na,b\n")}
    argv = [files.get(a, a.replace("{tmp}", str(tmp_path))) for a in argv]
    done = _batchrec(argv, _env(tmp_path, mongo_server_uri, **extra), capture_output=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"batchrec {argv[0]}: ") and message in lines[0], lines[0]
    assert "k:plaintext" not in done.stderr  # a key pasted by mistake is not echoed


USAGE_MISTAKES = [
    (["materialize", "--epochs", "abc"], "batchrec materialize: argument --epochs: invalid int value: 'abc'"),
    (["materialize", "--bogus"], "batchrec materialize: unrecognized arguments: --bogus"),
    (["recommend", "-k"], "batchrec recommend: argument -k: expected one argument"),
    (["nosuch"], "batchrec: argument COMMAND: invalid choice: 'nosuch'"),
    (["registry", "--limit", "0"], "batchrec registry: argument --limit: must be at least 1, not 0"),
    (["recommend", "--user", "u", "--max-age-hours", "0"],
     "batchrec recommend: argument --max-age-hours: must be a positive number of hours, not 0"),
]


@pytest.mark.parametrize(("argv", "message"), USAGE_MISTAKES, ids=[" ".join(m[0]) for m in USAGE_MISTAKES])
def test_a_usage_mistake_is_one_line_and_exit_code_2(tmp_path, mongo_server_uri, argv, message):
    """argparse's own errors (it printed the usage first): one line that names the help to read."""
    done = _batchrec(argv, _env(tmp_path, mongo_server_uri), capture_output=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(message) and lines[0].endswith("--help`)"), lines[0]


def test_a_failed_run_ends_with_what_failed_and_why(tmp_path, mongo_server_uri):
    """No data loaded: the run's log (Dagster's, above) is kept, and the last line says which step
    failed and why, in the step's own words, which name the command to run."""
    done = _batchrec(["materialize", "--epochs", "1"], _env(tmp_path, mongo_server_uri), capture_output=True)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback (most recent call last)" not in done.stderr
    assert last.startswith("batchrec materialize: run ") and " failed at user_item_matrix: " in last, last
    assert "No star was read: load data (`batchrec load-demo`)" in last


def test_unreachable_mongodb_is_one_line(tmp_path):
    # nothing listens on port 1: the connection is refused (server selection gives up after the
    # 2 s that the URI asks for, instead of the default 10 s)
    done = _batchrec(["registry"], _env(tmp_path, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=2000"),
                     capture_output=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("batchrec registry: cannot reach MongoDB: 127.0.0.1:1"), lines[0]


def test_a_reader_that_stops_early_ends_it_quietly(tmp_path, mongo_server_uri):
    """`batchrec settings | head -0`: the reader has gone before anything is written. Exit 141 (what
    SIGPIPE gives in a shell) and nothing on stderr, instead of a BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = _batchrec(["settings"], _env(tmp_path, mongo_server_uri), stdout=write_end,
                         stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_the_same_command_with_its_reader_prints_everything(tmp_path, mongo_server_uri):
    done = _batchrec(["settings"], _env(tmp_path, mongo_server_uri), capture_output=True)
    assert done.returncode == 0 and "BATCHREC_API_KEYS" in done.stdout and done.stderr == ""
