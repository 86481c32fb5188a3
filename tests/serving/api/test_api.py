"""The HTTP contract: recommendations by ids and by login, input validation, docs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest

from batchrec_dagster.serving.api.schemas import MAX_BODY_BYTES, MAX_INPUT_IDS, MAX_K
from tests.harness.serving import ITEM_IDS, N_ITEMS, NAMES, Serving, build_artifact


@pytest.fixture
def ready(serving: Serving) -> Serving:
    serving.publish(score=0.3)
    assert serving.manager.refresh_now().outcome == "swapped"
    return serving


def test_recommendations_exclude_own_items_and_report_unknown_ids(ready: Serving) -> None:
    starred = [1000, 1005, 1007]
    body = ready.recommend(starred + [5, 1005, 1005, 99999], k=10).json()
    recs = body["recommendations"]
    assert len(recs) == 10
    ids = [r["repo_id"] for r in recs]
    assert not set(ids) & set(starred) and set(ids) <= set(ITEM_IDS.tolist())
    assert len(set(ids)) == 10
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    assert all(r["name"] == f"owner{r['repo_id'] % 7}/repo-{r['repo_id']}" for r in recs)
    assert body["unknown_repo_ids"] == [5, 99999]
    assert body["duplicates_ignored"] == 2
    assert body["popularity_fallback"] is False and body["k"] == 10


def test_same_input_gets_the_same_answer_as_the_bare_model(ready: Serving) -> None:
    recommender = ready.manager.current.recommender
    indices, _ = recommender.recommend([recommender.index_of(np.array([1002, 1010]))], 7)
    body = ready.recommend([1002, 1010], k=7).json()
    assert [r["repo_id"] for r in body["recommendations"]] == ITEM_IDS[indices[0]].tolist()


@pytest.mark.parametrize("repo_ids", [[], [1, 2, 3]])
def test_empty_or_all_unknown_input_gets_the_popularity_ranking(ready: Serving, repo_ids: list[int]) -> None:
    body = ready.recommend(repo_ids, k=3).json()
    assert body["popularity_fallback"] is True
    # the test artifacts make the first repository the most popular, then the next, ...
    assert [r["repo_id"] for r in body["recommendations"]] == [1000, 1001, 1002]
    assert body["unknown_repo_ids"] == repo_ids


def test_k_larger_than_the_candidates_returns_what_there_is(ready: Serving) -> None:
    body = ready.recommend(ITEM_IDS[:35].tolist(), k=100).json()
    assert sorted(r["repo_id"] for r in body["recommendations"]) == ITEM_IDS[35:].tolist()
    body = ready.recommend(ITEM_IDS.tolist(), k=5).json()
    assert body["recommendations"] == []


@pytest.mark.parametrize("payload, where", [
    ({"repo_ids": [1000], "k": 0}, "k"),
    ({"repo_ids": [1000], "k": -3}, "k"),
    ({"repo_ids": [1000], "k": MAX_K + 1}, "k"),
    ({"repo_ids": [1000], "k": "5"}, "k"),
    ({"repo_ids": [1000], "k": 2.5}, "k"),
    ({"repo_ids": ["1000"]}, "repo_ids"),
    ({"repo_ids": [1000.0]}, "repo_ids"),
    ({"repo_ids": [True]}, "repo_ids"),
    ({"repo_ids": [-1]}, "repo_ids"),
    ({"repo_ids": [2**64]}, "repo_ids"),
    ({"repo_ids": 1000}, "repo_ids"),
    ({"repo_ids": None}, "repo_ids"),
    ({"k": 5}, "repo_ids"),
    ({"repo_ids": [1000], "user": "x"}, "user"),
    ({"repo_ids": list(range(MAX_INPUT_IDS + 1))}, "repo_ids"),
])
def test_invalid_input_gets_422_with_the_reason(ready: Serving, payload: dict, where: str) -> None:
    response = ready.http.post("/recommendations", json=payload)
    assert response.status_code == 422, response.text
    assert any(where in error["loc"] for error in response.json()["detail"])


@pytest.mark.parametrize("content", [b"", b"{", b"[1, 2]", b"null", b"\xff\xfe", b'{"repo_ids": [1,]}',
                                     b"[" * 100_000 + b"]" * 100_000, b'{"repo_ids": [1e400]}',
                                     b'{"repo_ids": [' + b"9" * 5000 + b"]}", b'{"repo_ids": {"$gt": 1}}'])
def test_malformed_json_gets_422(ready: Serving, content: bytes) -> None:
    response = ready.http.post("/recommendations", content=content,
                               headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_oversized_payloads_are_refused(ready: Serving) -> None:
    big = b'{"repo_ids": [' + b"1," * (MAX_BODY_BYTES // 2) + b"1]}"
    response = ready.http.post("/recommendations", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    def chunks():  # no Content-Length: the server counts the bytes as they arrive
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    response = ready.http.post("/recommendations", content=chunks())
    assert response.status_code == 413
    assert ready.recommend([1000]).status_code == 200  # and the server is still fine


def test_repositories_can_be_given_by_name(ready: Serving) -> None:
    """Friction (issue 18): the API took integer ids only, while the page and the CLI take
    owner/name. Names are looked up in the model's vocabulary (any case); unknown ones are listed."""
    by_ids = ready.recommend([1003, 1004, 1011], k=8).json()
    mixed = ready.http.post("/recommendations", json={
        "repo_ids": [NAMES[3], 1004, NAMES[11].upper(), "nobody/nothing", 5], "k": 8}).json()
    assert mixed["recommendations"] == by_ids["recommendations"]
    assert mixed["unknown_repo_names"] == ["nobody/nothing"] and mixed["unknown_repo_ids"] == [5]
    assert by_ids["unknown_repo_names"] == []
    only_unknown = ready.http.post("/recommendations", json={"repo_ids": ["a/b"], "k": 3}).json()
    assert only_unknown["popularity_fallback"] is True and only_unknown["unknown_repo_names"] == ["a/b"]
    for not_a_name in ("1000", "owner", "a/b/c", "x" * 300 + "/y", ""):
        response = ready.http.post("/recommendations", json={"repo_ids": [not_a_name]})
        assert response.status_code == 422, not_a_name


def test_by_login_reads_stars_from_mongodb(ready: Serving) -> None:
    now = datetime.now(UTC)
    ready.db["users"].insert_many([{"_id": 1, "login": "demo-user-0"}, {"_id": 2, "login": "no-stars"}])
    ready.db["stars"].insert_many([
        {"user_id": 1, "repo_id": repo, "starred_at": now - timedelta(minutes=i)}
        for i, repo in enumerate([1003, 1004, 1011, 424242])
    ] + [{"user_id": 2 + 1, "repo_id": 1000, "starred_at": now}])
    body = ready.http.get("/users/demo-user-0/recommendations", params={"k": 8}).json()
    assert body["login"] == "demo-user-0" and len(body["recommendations"]) == 8
    assert not {r["repo_id"] for r in body["recommendations"]} & {1003, 1004, 1011}
    assert body["unknown_repo_ids"] == [424242] and body["popularity_fallback"] is False
    direct = ready.recommend([1003, 1004, 1011, 424242], k=8).json()
    assert direct["recommendations"] == body["recommendations"]

    empty = ready.http.get("/users/no-stars/recommendations").json()
    assert empty["popularity_fallback"] is True and len(empty["recommendations"]) == 20

    missing = ready.http.get("/users/nobody-here/recommendations")
    assert missing.status_code == 404 and "nobody-here" in missing.json()["detail"]
    assert ready.http.get("/users/demo-user-0/recommendations", params={"k": 0}).status_code == 422
    assert ready.http.get("/users/demo-user-0/recommendations", params={"k": "x"}).status_code == 422
    assert ready.http.get(f"/users/{'a' * 300}/recommendations").status_code == 422


def test_by_login_reads_the_legacy_layout(ready: Serving) -> None:
    ready.db["users"].insert_one({"_id": 7, "login": "legacy-user"})
    ready.db["repositories"].insert_many([
        {"_id": 1001, "full_name": "owner0/repo-1001", "star_user_list": [7, 8]},
        {"_id": 1002, "full_name": "owner1/repo-1002", "star_user_list": [8]},
        {"_id": 1009, "full_name": "owner2/repo-1009", "star_user_list": [7]},
    ])
    body = ready.http.get("/users/legacy-user/recommendations", params={"k": 5}).json()
    direct = ready.recommend([1001, 1009], k=5).json()
    assert body["recommendations"] == direct["recommendations"]
    assert not {r["repo_id"] for r in body["recommendations"]} & {1001, 1009}


def test_names_come_from_mongodb_when_the_artifact_has_none(serving: Serving) -> None:
    serving.db["repositories"].insert_many(
        [{"_id": int(i), "full_name": f"from-mongo/{i}"} for i in ITEM_IDS[:N_ITEMS - 5]])
    serving.publish(score=0.3, data=build_artifact(with_names=False))
    serving.manager.refresh_now()
    assert serving.http.get("/model").json()["model"]["names_source"] == "mongodb"
    recs = serving.recommend([], k=N_ITEMS).json()["recommendations"]
    named = {r["repo_id"]: r["name"] for r in recs}
    assert named[1000] == "from-mongo/1000" and named[int(ITEM_IDS[-1])] is None


def test_docs_and_openapi(serving: Serving) -> None:
    spec = serving.http.get("/openapi.json").json()
    assert {"/recommendations", "/users/{login}/recommendations", "/model", "/healthz", "/readyz"} <= set(
        spec["paths"])
    body = spec["paths"]["/recommendations"]["post"]["requestBody"]["content"]["application/json"]
    assert "repo_ids" in body["schema"]["properties"]
    assert serving.http.get("/docs").status_code == 200


def test_the_docs_page_loads_nothing_from_elsewhere(serving: Serving) -> None:
    """Friction (issue 18): /docs was blank offline, its Swagger UI loaded from a CDN. Every URL
    the page loads is on this server, and answers."""
    html = serving.http.get("/docs").text
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
    assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/openapi.json"} <= set(urls), urls
    assert not [u for u in urls if "//" in u], urls  # nothing absolute: no CDN
    script = serving.http.get("/docs/swagger-ui-bundle.js")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert serving.http.get("/docs/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert serving.http.get("/redoc").status_code == 404  # ReDoc has no local assets: off


def test_unknown_routes_and_methods(serving: Serving) -> None:
    assert serving.http.get("/recommendations").status_code == 405
    assert serving.http.get("/nope").status_code == 404
    assert isinstance(serving.http, httpx.Client)


def test_the_fastapi_route_answers_like_the_fast_path(ready: Serving) -> None:
    """`POST /recommendations` is served by a pure-ASGI fast path; the FastAPI route it shadows
    (the documented one, used with fast_path=False) must give the same answers."""
    from batchrec_dagster.serving.api.app import create_app
    from tests.harness.serving import ServerThread

    plain = create_app(ready.manager, ready.db, manage_lifecycle=False, fast_path=False)
    cases = [b'{"repo_ids": [1000, 1000, 7], "k": 4}', b'{"repo_ids": []}', b'{"repo_ids": ["x"]}',
             b'{"repo_ids": ["owner3/repo-1003", "no/where", 1004], "k": 4}',
             b"{", b'{"repo_ids": [1], "k": 0}', b" " * (MAX_BODY_BYTES + 1)]
    with ServerThread(plain) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        for content in cases:
            fast = ready.http.post("/recommendations", content=content)
            slow = http.post("/recommendations", content=content)
            assert (fast.status_code, fast.json()) == (slow.status_code, slow.json()), content[:40]


def test_responses_are_valid_json_of_the_documented_schema(serving: Serving) -> None:
    from batchrec_dagster.serving.api.schemas import RecommendationResponse

    odd = ['quo"te/back\\slash', "유니코드/repo", "tab\tname/x"] + [f"o/r{i}" for i in range(N_ITEMS - 3)]
    serving.publish(score=0.3, data=build_artifact(names=odd))
    serving.manager.refresh_now()
    response = serving.recommend([1003, 5], k=N_ITEMS)
    parsed = RecommendationResponse.model_validate_json(response.content)
    assert {r.name for r in parsed.recommendations} >= set(odd[:3])
    assert parsed.unknown_repo_ids == [5] and parsed.model.score == 0.3
    assert response.headers["content-type"] == "application/json"
    by_login = serving.http.get("/users/x/recommendations")
    assert by_login.status_code == 404
