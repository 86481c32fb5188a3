"""`batchrec serve` as a user runs it: a subprocess configured only by the environment, for the local
deployment (artifacts under BATCHREC_HOME) and for prod (artifacts in GCS, here the emulator)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from batchrec_dagster.deployments import blob_store_for
from batchrec_dagster.localstack.process_groups import terminate
from batchrec_dagster.settings import load_settings
from tests.harness.servers import free_port
from tests.harness.serving import publish, wait_for


@pytest.mark.parametrize("deployment", ["local", "prod"])
def test_serve_command_answers_for_a_user(deployment: str, mongo_server_uri: str, mongo_db, gcs_emulator_host,
                                          gcs_bucket: str, tmp_path: Path) -> None:
    env = {**os.environ, "MONGODB_URI": mongo_server_uri, "MONGODB_DATABASE": mongo_db.name,
           "BATCHREC_HOME": str(tmp_path / "home"), "BATCHREC_DEPLOYMENT": deployment}
    if deployment == "prod":
        env.update(GCS_BUCKET=gcs_bucket, GCS_PREFIX="team-a")
    # the store the pipeline writes to for these settings (GCS: <bucket>/team-a/models/...)
    store = blob_store_for(load_settings(env))
    local_root = str(tmp_path / "home" / "storage" / "models")
    assert store.location == (gcs_bucket if deployment == "prod" else local_root)
    entry = publish(mongo_db, store, score=0.4)
    mongo_db["users"].insert_one({"_id": 10, "login": "demo-user-0"})
    mongo_db["stars"].insert_one({"user_id": 10, "repo_id": 1002, "starred_at": entry["data_end"]})

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "batchrec_dagster.serving.process.command", "serve", "--port", str(port),
             "--poll-seconds", "0.2", "--drain-seconds", "0.5", "--show", "demo-user-0",
             "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        # --show prints the user's recommendations once the model is loaded
        wait_for(lambda: "server keeps running" in log.read_text() or process.poll() is not None,
                 timeout_s=90, message="`serve --show` output")
        output = log.read_text()
        assert "server keeps running" in output, output
        assert "owner" in output and f"model {entry['_id']}" in output
        response = httpx.get(f"http://127.0.0.1:{port}/users/demo-user-0/recommendations", timeout=30)
        assert response.status_code == 200
        body = response.json()
        assert body["model"]["id"] == str(entry["_id"]) and len(body["recommendations"]) == 20
        assert 1002 not in {r["repo_id"] for r in body["recommendations"]}
    finally:
        terminate(process)
    # SIGTERM: a drain (shutdown.py), then a clean exit: status 0, no traceback
    assert process.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()
