"""Issue 13 point 9: the API and the pipeline accept the same ids (github.is_github_id), and a
malformed `repo_id` stored in `stars` (a boolean, a negative number) is not taken for an id."""

from __future__ import annotations

import numpy as np
import pytest

from batchrec_dagster.sources.github_ids import MAX_ID, is_github_id
from tests.harness.serving import Serving, build_artifact

EDGE_VALUES = [0, 1, 1000, MAX_ID, -1, -42, MAX_ID + 1, True, False, 1.0, "5", None, [1], {"$gt": 0}]


@pytest.fixture
def small_ids(serving: Serving) -> Serving:
    """A model over repositories 1..40, so that True == 1 would hit a known repository."""
    serving.publish(score=0.3, data=build_artifact(item_ids=np.arange(1, 41, dtype=np.int64)))
    assert serving.manager.refresh_now().outcome == "swapped"
    return serving


@pytest.mark.parametrize("value", EDGE_VALUES, ids=repr)
def test_the_api_accepts_exactly_the_ids_the_pipeline_reads(small_ids: Serving, value) -> None:
    response = small_ids.http.post("/recommendations", json={"repo_ids": [value], "k": 3})
    assert response.status_code == (200 if is_github_id(value) else 422), response.text


def test_malformed_stored_repo_ids_are_not_ids(small_ids: Serving) -> None:
    small_ids.db["users"].insert_many([{"_id": 1, "login": "bool-star"}, {"_id": 2, "login": "mixed"}])
    small_ids.db["stars"].insert_many([
        {"user_id": 1, "repo_id": True},                  # would be read as repository 1
        {"user_id": 2, "repo_id": True}, {"user_id": 2, "repo_id": -42},
        {"user_id": 2, "repo_id": 3}, {"user_id": 2, "repo_id": 424242},
    ])
    only_bool = small_ids.http.get("/users/bool-star/recommendations", params={"k": 40})
    assert only_bool.status_code == 200
    body = only_bool.json()
    assert body["popularity_fallback"] is True and body["unknown_repo_ids"] == []
    assert 1 in {r["repo_id"] for r in body["recommendations"]}      # not excluded as "starred"

    mixed = small_ids.http.get("/users/mixed/recommendations", params={"k": 10}).json()
    assert mixed["unknown_repo_ids"] == [424242]                      # no `true`, no -42
    direct = small_ids.http.post("/recommendations", json={"repo_ids": [3, 424242], "k": 10}).json()
    assert mixed["recommendations"] == direct["recommendations"]
