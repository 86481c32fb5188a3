"""Real servers for the tests: MongoDB over the wire and the GCS JSON API over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from batchrec_dagster.sources.embedded_mongo import mongo_uri, start_server, wait_until_serving


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mongo(data_dir: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    process = start_server(data_dir, port)
    uri = mongo_uri("127.0.0.1", port)
    wait_until_serving(uri, process)
    return uri, process


def start_gcs_emulator(data_dir: Path, timeout_s: float = 60.0) -> tuple[str, subprocess.Popen]:
    port = free_port()
    emulator = Path(sys.executable).with_name("gcp-storage-emulator")
    process = subprocess.Popen(
        [str(emulator), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
        stdout=open(data_dir / "gcs.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        stdin=subprocess.DEVNULL, cwd=data_dir, start_new_session=True,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:  # poll for readiness; the emulator answers the bucket list once it is up
        if process.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with {process.returncode}")
        try:
            if requests.get(f"{host}/storage/v1/b?project=test", timeout=1).status_code < 500:
                return host, process
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("gcp-storage-emulator did not start")


def external_mongo_uri() -> str | None:
    return os.environ.get("BATCHREC_TEST_MONGODB_URI") or None
