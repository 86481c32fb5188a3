"""`batchrec serve` as a subprocess for the tests that need real processes and signals (workers,
SIGTERM): started with an environment like a user's, stopped by PID, its workers checked gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from batchrec_dagster.deployments import blob_store_for
from batchrec_dagster.localstack import process_groups
from batchrec_dagster.localstack.processes import children
from batchrec_dagster.settings import PROJECT_ROOT, load_settings
from batchrec_dagster.storage.blobs import BlobStore
from tests.harness.servers import free_port
from tests.harness.serving import wait_for


def serve_env(mongo_uri: str, database: str, home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MONGODB_URI": mongo_uri, "MONGODB_DATABASE": database,
           "BATCHREC_HOME": str(home), "BATCHREC_DEPLOYMENT": "local", **extra}
    for name in ("BATCHREC_API_KEYS", "BATCHREC_CORS_ORIGINS", "PROMETHEUS_MULTIPROC_DIR"):
        if name not in extra:
            env.pop(name, None)
    return env


def store_for(env: dict[str, str]) -> BlobStore:
    """The artifact store the server of this environment reads (the pipeline writes there)."""
    return blob_store_for(load_settings(env))


class ServeProcess:
    """`python -m batchrec_dagster.serving.process.command serve --port <free> ARGS` with `env`."""

    def __init__(self, env: dict[str, str], *args: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.args = ["--port", str(self.port), *args]
        self.log = log
        self.process: subprocess.Popen | None = None
        self.workers: set[int] = set()

    def __enter__(self) -> ServeProcess:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "batchrec_dagster.serving.process.command", "serve", *self.args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                cwd=PROJECT_ROOT)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """One request on a new connection (with workers: to whichever one the kernel picks)."""
        return httpx.get(self.url + path, timeout=30, **kwargs)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        def ready() -> bool:
            self.check_running()
            try:
                return self.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False
        wait_for(ready, timeout_s, "the server to be ready")

    def check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n"
                                 f"{self.log.read_text()[-3000:]}")

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then the exit status (killed, and the test failed, after `timeout_s`)."""
        assert self.process is not None
        self.workers |= children(self.pid)
        if not process_groups.terminate(self.process, timeout_s):
            raise AssertionError(f"serve did not stop within {timeout_s}s:\n{self.log.read_text()[-3000:]}")
        return self.process.returncode

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()
        left = process_groups.wait_all_gone(self.workers, timeout_s=30)
        if left:
            process_groups.kill_all(left)  # a test must not leave processes behind, even when it fails
            raise AssertionError(f"workers {left} did not exit within 30s of the supervisor")
