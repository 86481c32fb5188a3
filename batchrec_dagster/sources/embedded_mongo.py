"""Start the embedded MongoDB-wire server (nx-27017) on demand for local runs and tests.

The product code talks to it with pymongo exactly as to MongoDB; this module only makes sure a
server is listening, and says so on stderr (one line) when it had to start one: the server
outlives the command that started it. Several processes (webserver, daemon, run workers) may ask
at once: a file lock lets one of them start it, the others find it running.

Whose server is it? Two PID files live in the data directory: ours (`batchrec-server.pid`, written
at start) and nx-27017's own (`server.pid`, which makes it refuse to start while that PID is
alive). After a kill -9 both stay behind, and their PID may since belong to an unrelated
process. So a PID counts as this home's server only if it runs and its command line is our server
for this data directory; anything else is a stale file, removed before starting.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pymongo.errors

from batchrec_dagster.localstack.processes import cmdline, is_running, stop_process

_STARTUP_TIMEOUT_S = 60.0
_MODULE = "batchrec_dagster.sources.embedded_mongo"
OWNER_PID_FILE = "batchrec-server.pid"
NX_PID_FILE = "server.pid"


class EmbeddedMongoError(RuntimeError):
    """The embedded server could not be started."""


def mongo_uri(host: str, port: int) -> str:
    return f"mongodb://{host}:{port}/?directConnection=true"


def is_serving(uri: str, timeout_ms: int = 500) -> bool:
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def start_server(data_dir: Path, port: int, host: str = "127.0.0.1") -> subprocess.Popen:
    """Start nx-27017 as a child in its own session (it outlives a CLI command, not the machine)."""
    data_dir = data_dir.resolve()  # absolute: the child runs in data_dir, and server_pid compares it
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        [sys.executable, "-m", _MODULE, "--data-dir", str(data_dir),
         "--host", host, "-p", str(port),
         "--pid-file", str(data_dir / NX_PID_FILE), "--log-file", str(data_dir / "server.log")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, cwd=data_dir,
    )
    # our own record (nx-27017's pid file appears later and it refuses to start if it exists)
    (data_dir / OWNER_PID_FILE).write_text(str(process.pid))
    return process


def wait_until_serving(uri: str, process: subprocess.Popen | None = None,
                       timeout_s: float = _STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not is_serving(uri):
        if process is not None and process.poll() is not None:
            raise EmbeddedMongoError(f"embedded MongoDB exited with code {process.returncode}; "
                                     f"see its log in the data directory")
        if time.monotonic() > deadline:
            raise EmbeddedMongoError(f"embedded MongoDB did not answer at {uri} in {timeout_s:.0f}s")


def ensure_embedded_mongo(data_dir: Path, port: int, host: str = "127.0.0.1") -> str:
    """Return the URI of a running embedded server, starting one if none answers."""
    uri = mongo_uri(host, port)
    if not is_serving(uri):
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(data_dir / ".start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not is_serving(uri):
                _clear_stale_pid_files(data_dir, port, host)
                process = start_server(data_dir, port, host)
                wait_until_serving(uri, process)
                # a command that starts it leaves it running (issue 18): say so, on stderr so that
                # piped output stays clean
                print(f"started the embedded MongoDB (PID {process.pid}, port {port}, data {data_dir}); "
                      f"it keeps running: `batchrec stop` stops it", file=sys.stderr)
    if server_pid(data_dir, port) is None:
        # another checkout's (or anyone's) server on this port would silently mix two datasets
        raise EmbeddedMongoError(
            f"port {port} is taken by a server that is not the embedded MongoDB of {data_dir}; "
            f"set BATCHREC_MONGO_PORT to a free port, or MONGODB_URI to use that server")
    return uri


def _server_args(pid: int) -> dict[str, str] | None:
    """The options of a running process if it is our embedded server, else None."""
    args = cmdline(pid)
    if not args or _MODULE not in args:
        return None
    options = args[args.index(_MODULE) + 1:]
    return dict(zip(options[::2], options[1::2], strict=False))


def _running_server(data_dir: Path) -> tuple[int, str] | None:
    """(PID, port) of this data directory's running server, from either PID file."""
    for name in (OWNER_PID_FILE, NX_PID_FILE):
        pid = _read_pid(data_dir / name)
        options = _server_args(pid) if pid is not None and is_running(pid) else None
        if options is not None and Path(options.get("--data-dir", "")) == data_dir.resolve():
            return pid, options.get("-p", "")
    return None


def server_pid(data_dir: Path, port: int | None = None) -> int | None:
    """The PID of this data directory's running server (listening on `port`, when given)."""
    found = _running_server(data_dir)
    if found is None or (port is not None and found[1] != str(port)):
        return None
    return found[0]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _remove_pid_files(data_dir: Path) -> None:
    for name in (OWNER_PID_FILE, NX_PID_FILE):
        (data_dir / name).unlink(missing_ok=True)


def _clear_stale_pid_files(data_dir: Path, port: int, host: str) -> None:
    """Before a start: remove PID files that name no server of this home (nx-27017 would refuse
    to start), and refuse to start a second server over a live one."""
    found = _running_server(data_dir)
    if found is None:
        _remove_pid_files(data_dir)
        return
    pid, running_on = found
    if running_on != str(port):
        raise EmbeddedMongoError(
            f"the embedded MongoDB of {data_dir} already runs as PID {pid} on port {running_on}; "
            f"set BATCHREC_MONGO_PORT={running_on}, or run `batchrec stop` first")
    wait_until_serving(mongo_uri(host, port))  # ours, on this port, still starting up


def wait_until_stopped(uri: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while is_serving(uri):
        if time.monotonic() > deadline:
            raise EmbeddedMongoError(f"embedded MongoDB at {uri} did not stop in {timeout_s:.0f}s")


def stop_embedded_mongo(data_dir: Path, *, grace_s: float = 10.0) -> bool:
    """Stop this data directory's server; return once its process is gone (False: none ran).

    SIGTERM first; a server still there after `grace_s` gets SIGKILL. A PID file that names some
    other process is never acted on, only removed."""
    if not data_dir.is_dir():
        return False
    with open(data_dir / ".start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # no start in between: its fresh PID files would go
        pid = server_pid(data_dir)
        stopped = pid is not None and stop_process(pid, grace_s=grace_s) != "not_running"
        _remove_pid_files(data_dir)  # after a SIGKILL nx-27017 did not remove its own
    return stopped


def _serve_quietly() -> None:
    """Run nx-27017's own entry point with WARNING logging: at INFO it logs every command."""
    import logging

    from nx_27017 import nx_27017

    basic_config = logging.basicConfig

    def warning_level(**kwargs: object) -> None:
        kwargs["level"] = logging.WARNING
        basic_config(**kwargs)

    logging.basicConfig = warning_level
    sys.exit(nx_27017.main())


if __name__ == "__main__":
    _serve_quietly()
