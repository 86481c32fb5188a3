"""The by-login route when MongoDB fails or holds odd users (issue 13, point 8): JSON answers, never
a plain-text 500. MongoDB is a real nx-27017 server that the test starts and then stops."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from batchrec_dagster.localstack.process_groups import terminate
from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.api.service import USER_LOOKUP_TIMEOUT_S
from batchrec_dagster.serving.model.manager import ModelManager
from batchrec_dagster.sources.mongo import connect
from tests.harness.servers import start_mongo
from tests.harness.serving import ServerThread, Serving, publish, wait_for
from tests.harness.serving_processes import ServeProcess, serve_env, store_for


@pytest.fixture
def ready(serving: Serving) -> Serving:
    serving.publish(score=0.3)
    assert serving.manager.refresh_now().outcome == "swapped"
    return serving


@pytest.mark.parametrize("odd_id", [{"$gt": 0}, {"a": 1}, [1, 2], True, 1.5])
def test_a_user_whose_id_is_not_a_plain_value_is_not_found(ready: Serving, odd_id: object) -> None:
    ready.db["users"].insert_one({"_id": odd_id, "login": "odd"})
    # stars of other users that an `_id` reused as a query ({"$gt": 0}) would match
    ready.db["stars"].insert_many([{"user_id": u, "repo_id": 1000 + u, "starred_at": datetime.now(UTC)}
                                   for u in range(1, 6)])
    response = ready.http.get("/users/odd/recommendations")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/json"
    assert "odd" in response.json()["detail"]


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[tuple[str, object]]:
    uri, process = start_mongo(tmp_path / "mongo")
    try:
        yield uri, process
    finally:
        terminate(process)
        assert process.poll() is not None


def test_mongodb_down_gets_a_json_503_and_the_model_keeps_serving(own_mongo, gcs_store) -> None:
    uri, process = own_mongo
    client = connect(uri, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
    db = client["batchrec"]
    entry = publish(db, gcs_store, score=0.3)
    db["users"].insert_one({"_id": 1, "login": "someone"})
    db["stars"].insert_one({"user_id": 1, "repo_id": 1001, "starred_at": datetime.now(UTC)})
    manager = ModelManager(db, gcs_store, poll_seconds=None)
    assert manager.refresh_now().outcome == "swapped"
    with ServerThread(create_app(manager, db)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/users/someone/recommendations").status_code == 200

        terminate(process)  # MongoDB goes away (the fixture checks it is gone)
        assert process.poll() is not None
        response = http.get("/users/someone/recommendations")
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/json"
        assert "user database unavailable" in response.json()["detail"]

        # requests by ids do not need MongoDB: the loaded model keeps answering
        by_ids = http.post("/recommendations", json={"repo_ids": [1001], "k": 3})
        assert by_ids.status_code == 200 and by_ids.json()["model"]["id"] == str(entry["_id"])
        assert http.get("/readyz").status_code == 200
        # the registry poll fails, is counted and shown; the model stays
        assert manager.refresh_now().outcome == "failed"
        status = http.get("/model").json()
        assert status["registry_reachable"] is False and status["poll_errors"] == 1
        assert status["last_outcome"]["entry_id"] is None and status["last_swap_error"]["entry_id"] is None
        assert "registry query failed" in status["last_swap_error"]["message"]
        assert status["model"]["id"] == str(entry["_id"])
        metrics = http.get("/metrics").text
        assert "batchrec_registry_up 0.0" in metrics and "batchrec_registry_poll_errors_total 1.0" in metrics
        by_login = 'batchrec_http_requests_total{route="/users/{login}/recommendations",status="503"} 1.0'
        assert by_login in metrics
    client.close()


def test_a_frozen_mongodb_fails_a_login_within_the_documented_time(own_mongo, tmp_path: Path) -> None:
    """D9: with MongoDB stopped by SIGSTOP (connections open, no answer), the first login request
    took 8-11 s. `batchrec serve` (a real process, as a user runs it) must answer 503 within the
    documented 2 s (plus the HTTP round trip), and recover once MongoDB runs again."""
    uri, mongo = own_mongo
    env = serve_env(uri, "batchrec", tmp_path / "home")
    client = connect(uri)
    db = client["batchrec"]
    entry = publish(db, store_for(env), score=0.3)
    db["users"].insert_one({"_id": 1, "login": "someone"})
    db["stars"].insert_one({"user_id": 1, "repo_id": 1001, "starred_at": datetime.now(UTC)})
    client.close()
    with ServeProcess(env, "--poll-seconds", "3600", "--drain-seconds", "0.2",
                      log=tmp_path / "serve.log") as server:
        server.wait_ready()
        assert server.get("/users/someone/recommendations").status_code == 200  # connections open
        os.kill(mongo.pid, signal.SIGSTOP)
        try:
            for _ in range(2):  # the first request on the frozen server, and the next one
                started = time.monotonic()
                response = server.get("/users/someone/recommendations")
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert "user database unavailable" in response.json()["detail"]
                assert elapsed < USER_LOOKUP_TIMEOUT_S + 1.0, f"took {elapsed:.1f} s"
            by_ids = httpx.post(server.url + "/recommendations", json={"repo_ids": [1001]}, timeout=30)
            assert by_ids.json()["model"]["id"] == str(entry["_id"])  # the model keeps answering
        finally:
            os.kill(mongo.pid, signal.SIGCONT)
        wait_for(lambda: server.get("/users/someone/recommendations").status_code == 200, 30,
                 "login look-ups to work again")
        assert server.terminate() == 0
