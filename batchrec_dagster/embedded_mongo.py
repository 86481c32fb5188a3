"""Start the embedded MongoDB-wire server (nx-27017) on demand for local runs and tests.

The product code talks to it with pymongo exactly as to MongoDB; this module only makes sure a
server is listening. Several processes (webserver, daemon, run workers) may ask at once: a file
lock lets one of them start it, the others find it running.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pymongo.errors

_STARTUP_TIMEOUT_S = 60.0
OWNER_PID_FILE = "batchrec-server.pid"


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
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrec_dagster.embedded_mongo", "--data-dir", str(data_dir),
         "--host", host, "-p", str(port),
         "--pid-file", str(data_dir / "server.pid"), "--log-file", str(data_dir / "server.log")],
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
                wait_until_serving(uri, start_server(data_dir, port, host))
    if not _owns_server(data_dir):
        # another checkout's (or anyone's) server on this port would silently mix two datasets
        raise EmbeddedMongoError(
            f"port {port} is taken by a server that is not the embedded MongoDB of {data_dir}; "
            f"set BATCHREC_MONGO_PORT to a free port, or MONGODB_URI to use that server")
    return uri


def _owns_server(data_dir: Path) -> bool:
    """Whether the server this data directory started is still running."""
    try:
        os.kill(int((data_dir / OWNER_PID_FILE).read_text().strip()), 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def wait_until_stopped(uri: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while is_serving(uri):
        if time.monotonic() > deadline:
            raise EmbeddedMongoError(f"embedded MongoDB at {uri} did not stop in {timeout_s:.0f}s")


def stop_embedded_mongo(data_dir: Path) -> bool:
    pid_file = data_dir / OWNER_PID_FILE
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), 15)
    except (ProcessLookupError, ValueError):
        return False
    return True


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
