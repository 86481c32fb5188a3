"""Micro-batching must never mix up requests: concurrent requests with different inputs and k get
exactly the answer each would get alone, in every inference mode."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.model.manager import ModelManager
from tests.harness.serving import ITEM_IDS, ServerThread, publish


@pytest.mark.parametrize("mode", ["batched", "coalesced", "inline"])
def test_concurrent_requests_get_their_own_answers(mode: str, mongo_db, gcs_store) -> None:
    publish(mongo_db, gcs_store, score=0.5)
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=None)
    assert manager.refresh_now().outcome == "swapped"
    rng = np.random.default_rng(1)
    payloads = [{"repo_ids": rng.choice(ITEM_IDS, int(rng.integers(0, 12)), replace=False).tolist(),
                 "k": int(rng.integers(1, 15))} for _ in range(48)]
    recommender = manager.current.recommender
    expected = []
    for p in payloads:  # the bare recvae answer for each request alone
        columns = recommender.index_of(np.asarray(p["repo_ids"], dtype=np.int64))
        indices, _ = recommender.recommend([columns[columns >= 0]], p["k"])
        expected.append(ITEM_IDS[indices[0][indices[0] >= 0]].tolist())

    with ServerThread(create_app(manager, mongo_db, inference=mode, max_batch=8)) as server, \
            httpx.Client(base_url=server.url, timeout=30,
                         limits=httpx.Limits(max_connections=16)) as http:
        def ask(payload: dict) -> list[int]:
            response = http.post("/recommendations", json=payload)
            assert response.status_code == 200, response.text
            return [r["repo_id"] for r in response.json()["recommendations"]]

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, payloads))
        stats = http.get("/model").json()["inference"]
    assert answers == expected
    assert stats["mode"] == mode and stats["requests"] == len(payloads)
