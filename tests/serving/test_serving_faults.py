"""The server under bad registry entries and malformed HTTP: it keeps serving its model, answers
every bad request with a 4xx (never a 5xx or a dropped connection), and says what it rejected."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from batchrec_dagster.registry.models import MODELS
from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.model.manager import ModelManager
from tests.harness.serving import Clock, ServerThread, Serving, publish

# fault injection on real servers: run alone with `pytest -m faults`
pytestmark = pytest.mark.faults


@pytest.fixture
def server(mongo_db: Any, gcs_store: Any) -> Iterator[Serving]:
    """The API with the production ranking (champions.serving_order), polled by the test."""
    clock = Clock()
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=None, clock=clock)
    with ServerThread(create_app(manager, mongo_db)) as thread, \
            httpx.Client(base_url=thread.url, timeout=30) as http:
        yield Serving(thread.url, http, manager, mongo_db, gcs_store, clock)


def _bad_entries(fresh: datetime) -> list[dict[str, Any]]:
    base = {"model_kind": "recvae", "run_id": "r", "partition_key": "p", "score": 0.99, "bucket": "b",
            "size_bytes": 10, "sha256": "0" * 64, "data_end": fresh, "created_at": fresh}
    entries = [
        {**base, "file_name": "../../../../etc/passwd"},      # traversal out of the store
        {**base, "file_name": "/etc/passwd"},
        {**base, "file_name": {"$ne": None}},                 # not a string
        {**base, "file_name": 42},
        {**{k: v for k, v in base.items() if k != "sha256"}, "file_name": "no-checksum.pt"},
        {**base, "file_name": "no-such-artifact.pt"},
        {**base, "file_name": "bad-size.pt", "size_bytes": "ten"},
        {**base, "file_name": "string-date.pt", "data_end": fresh.isoformat()},  # never fresh: a string
        {**base, "file_name": "naive-kind.pt", "model_kind": ["recvae"]},
        {"model_kind": "recvae", "data_end": fresh},           # almost nothing
    ]
    return [{**entry, "run_id": f"bad-{i}"} for i, entry in enumerate(entries)]


def test_bad_registry_entries_never_stop_a_good_model(server: Serving) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    good = publish(server.db, server.store, score=0.2, data_end=now - timedelta(hours=2))
    server.db[MODELS].insert_many(_bad_entries(now))  # newer than the good model: ranked above it
    result = server.manager.refresh_now()
    assert result.outcome == "swapped" and result.entry_id == str(good["_id"])
    assert server.http.get("/readyz").status_code == 200
    status = server.http.get("/model").json()
    assert status["model"]["id"] == str(good["_id"])
    rejected = " ".join(e["message"] for e in status["rejected_candidates"])
    assert "escapes the store" in rejected or "passwd" in rejected  # the traversal was refused, visibly
    assert server.recommend([1000]).status_code == 200
    # the next poll neither crashes nor swaps
    assert server.manager.refresh_now().outcome in ("unchanged", "skipped_failed", "failed")
    assert server.http.get("/model").json()["model"]["id"] == str(good["_id"])


def _malformed() -> list[tuple[str, str, dict[str, Any]]]:
    post = "/recommendations"
    bodies: list[Any] = [
        "", "{", "null", "[]", '"text"', "42", "{}", '{"repo_ids": null}', '{"repo_ids": "1,2"}',
        '{"repo_ids": [1.5]}', '{"repo_ids": ["1"]}', '{"repo_ids": [true]}', '{"repo_ids": [-1]}',
        '{"repo_ids": [9223372036854775808]}', '{"repo_ids": [[1]]}', '{"repo_ids": [{"$gt": 0}]}',
        '{"repo_ids": [1], "k": 0}', '{"repo_ids": [1], "k": -5}', '{"repo_ids": [1], "k": 1001}',
        '{"repo_ids": [1], "k": "10"}', '{"repo_ids": [1], "k": 2.5}', '{"repo_ids": [1], "k": null}',
        '{"repo_ids": [1], "extra": 1}', '{"repo_ids": [1]', '{"repo_ids": [1]}}',
        json.dumps({"repo_ids": list(range(10_001))}), "\x00\x01\x02", '{"repo_ids": [1e400]}',
        '{"repo_ids": [NaN]}', '{"repo_ids": [Infinity]}',
    ]
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", post, {"content": b, "headers": {"content-type": "application/json"}}) for b in bodies]
    cases += [
        ("POST", post, {"content": b"x" * (2 << 20), "headers": {"content-type": "application/json"}}),
        ("POST", post, {"content": "{\"repo_ids\": [1]}".encode("utf-16"),
                        "headers": {"content-type": "application/json"}}),
        ("GET", post, {}), ("PUT", post, {"json": {"repo_ids": [1]}}), ("DELETE", "/model", {}),
        ("GET", "/users/demo/recommendations?k=abc", {}), ("GET", "/users/demo/recommendations?k=0", {}),
        ("GET", "/users/demo/recommendations?k=100000", {}), ("GET", "/users/demo/recommendations?k=-1", {}),
        ("GET", "/users/" + "a" * 5000 + "/recommendations", {}),
        ("GET", "/users/%00/recommendations", {}), ("GET", "/users/..%2F..%2Fetc/recommendations", {}),
        ("GET", "/users/%ZZ/recommendations", {}), ("GET", "/users//recommendations", {}),
        ("GET", "/users/nobody-at-all/recommendations", {}), ("GET", "/no/such/route", {}),
        ("GET", "/users/x/recommendations/extra", {}), ("POST", "/page/compare", {"content": b"{"}),
        ("POST", "/page/compare", {"json": {"repo_ids": "x"}}), ("GET", "/page/history?limit=abc", {}),
    ]
    return cases


def test_fifty_malformed_requests_get_a_4xx_and_the_server_keeps_serving(server: Serving) -> None:
    good = publish(server.db, server.store, score=0.3)
    server.db["users"].insert_one({"_id": {"$gt": 0}, "login": "injector"})  # a sub-document _id
    server.db["stars"].insert_many([{"user_id": i, "repo_id": 1001} for i in range(5)])
    server.manager.refresh_now()
    cases = _malformed() + [("GET", "/users/injector/recommendations", {})]
    assert len(cases) >= 50
    answers = []
    for method, path, kwargs in cases:
        response = server.http.request(method, path, **kwargs)
        answers.append((method, path[:60], str(kwargs)[:80], response.status_code))
    wrong = [a for a in answers if not 400 <= a[-1] < 500]
    assert not wrong, f"not a 4xx: {wrong}"
    ok = server.recommend([1000])
    assert ok.status_code == 200 and ok.json()["model"]["id"] == str(good["_id"])
    assert server.http.get("/readyz").status_code == 200
