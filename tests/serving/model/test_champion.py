"""The server serves what the registry decides (champions.serving_order): the champion chosen on
comparable scores of an evaluation window, an operator's pin, a ban; the page shows the champion,
the best challenger and the served model's comparable score history. Registry, evaluations and
champions in MongoDB over the wire; artifacts in the GCS emulator; the API over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from batchrec_dagster.registry import evaluations, operator_actions
from batchrec_dagster.registry.champions import decide_and_record
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.model.manager import ModelManager
from tests.harness.asgi import in_process
from tests.harness.serving import ServerThread, build_artifact, publish, tamper

POLICY = SelectionPolicy()  # the defaults: 24 h maximum age, ties within 1e-4


def evaluate(db: Any, scores: dict[str, float], data_end: Any, hours_after: int = 1) -> None:
    """Comparable scores of several models on one window after their data, as model_evaluation
    writes them, then the champion decision."""
    start = data_end + timedelta(hours=hours_after - 1)
    evaluations.ensure_indexes(db)
    for model_id, score in scores.items():
        evaluations.record_evaluation(db, {"model_id": model_id, "window_start": start,
                                           "window_end": start + timedelta(hours=1), "score": score})
    decide_and_record(db, POLICY)


@pytest.fixture
def registry(mongo_db, gcs_store) -> Iterator[tuple[Any, ModelManager, httpx.Client]]:
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=None, load_challenger=True)
    with in_process(create_app(manager, mongo_db)) as http:
        yield mongo_db, manager, http


def served(http: httpx.Client) -> tuple[str, str | None, dict]:
    status = http.get("/model").json()
    return status["model"]["id"], (status["challenger"] or {}).get("id"), status["selection"]


def test_the_champion_serves_not_the_best_own_score(registry, gcs_store) -> None:
    db, manager, http = registry
    # own scores (each on its own test users) say a; the comparable window says b, then c
    a, b, c = (publish(db, gcs_store, score=s, seed=i) for i, s in enumerate((0.9, 0.2, 0.3)))
    ids = {name: str(e["_id"]) for name, e in zip("abc", (a, b, c), strict=True)}
    evaluate(db, {ids["a"]: 0.10, ids["b"]: 0.30, ids["c"]: 0.25}, a["data_end"])
    manager.refresh_now()
    model, challenger, selection = served(http)
    assert (model, challenger) == (ids["b"], ids["c"])  # the challenger: the next by comparable score
    assert selection["role"] == "champion" and selection["champion"]["model_id"] == ids["b"]

    # the page: side by side, and the served model's comparable history
    compare = http.post("/page/compare", json={"repos": "1003 1004", "k": 5}).json()
    assert compare["champion"]["model"]["id"] == ids["b"] and compare["challenger"]["model"]["id"] == ids["c"]
    history = http.get("/page/history").json()
    assert [p["score"] for p in history["served"]] == [0.30]
    assert history["champions"][0]["model_id"] == ids["b"] and history["champions"][0]["score"] == 0.30
    by_id = {e["id"]: e for e in history["entries"]}
    assert (by_id[ids["a"]]["score"], by_id[ids["a"]]["comparable_score"]) == (0.9, 0.10)

    # a newer window on which c beats b: c becomes champion, b the challenger (reused, not reloaded)
    evaluate(db, {ids["a"]: 0.1, ids["b"]: 0.2, ids["c"]: 0.4}, a["data_end"], hours_after=2)
    loaded_b = manager.current
    assert manager.refresh_now().entry_id == ids["c"]
    assert served(http)[:2] == (ids["c"], ids["b"]) and manager.challenger is loaded_b
    assert [p["score"] for p in http.get("/page/history").json()["served"]] == [0.25, 0.4]


def test_a_pin_serves_until_unpinned_and_a_ban_replaces_the_champion(registry, gcs_store) -> None:
    db, manager, http = registry
    a, b = publish(db, gcs_store, score=0.5, seed=1), publish(db, gcs_store, score=0.1, seed=2)
    ids = (str(a["_id"]), str(b["_id"]))
    evaluate(db, {ids[0]: 0.4, ids[1]: 0.2}, a["data_end"])
    manager.refresh_now()
    assert served(http)[0] == ids[0]

    operator_actions.pin(db, ids[1], "try the other one", policy=POLICY)
    assert manager.refresh_now().outcome == "swapped"
    model, challenger, selection = served(http)
    assert (model, challenger, selection["role"]) == (ids[1], ids[0], "pin")
    assert "try the other one" in selection["reason"]
    operator_actions.unpin(db)
    manager.refresh_now()
    assert served(http)[0] == ids[0]

    operator_actions.ban(db, ids[0], "bad answers", policy=POLICY)
    manager.refresh_now()
    model, challenger, selection = served(http)
    assert model == ids[1] and challenger is None  # the banned model is not a challenger either
    assert ids[0] in selection["banned"]


def test_banning_every_fresh_model_leaves_the_server_unready_like_a_restarted_one(registry, gcs_store
                                                                                  ) -> None:
    """D5: the running server kept serving the banned model (/readyz 200, `selection` null) while
    a restarted one was unready. Now both are unready with the reason, and nothing banned answers."""
    db, manager, http = registry
    a, b = publish(db, gcs_store, score=0.5, seed=1), publish(db, gcs_store, score=0.1, seed=2)
    ids = (str(a["_id"]), str(b["_id"]))
    evaluate(db, {ids[0]: 0.4, ids[1]: 0.2}, a["data_end"])
    manager.refresh_now()
    assert served(http)[:2] == ids and http.get("/readyz").status_code == 200

    operator_actions.ban(db, ids[0], "bad answers", policy=POLICY)
    operator_actions.ban(db, ids[1], "also bad", policy=POLICY)
    assert manager.refresh_now().outcome == "no_model"
    restarted = ModelManager(db, gcs_store, poll_seconds=None, load_challenger=True)
    with ServerThread(create_app(restarted, db)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as fresh:
        restarted.refresh_now()
        for client in (http, fresh):
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "the registry holds no fresh model that is not banned" in ready.json()["detail"]
            status = client.get("/model").json()
            assert (status["ready"], status["model"], status["challenger"], status["selection"]) == (
                False, None, None, None)
            assert client.post("/recommendations", json={"repo_ids": [1003]}).status_code == 503
            assert client.post("/page/compare", json={"repos": "1003"}).status_code == 503
    # the running one also says which model it stopped serving, and why
    assert f"model {ids[0]} was banned by an operator (bad answers)" in http.get("/readyz").json()["detail"]
    assert ids[0] in http.get("/model").json()["withdrawn"]
    assert ids[0] not in http.get("/metrics").text  # no longer named as the served model

    operator_actions.unban(db, ids[1], "fixed", policy=POLICY)
    assert manager.refresh_now().outcome == "swapped"
    assert http.get("/readyz").status_code == 200 and http.get("/model").json()["withdrawn"] is None


def test_selection_describes_the_model_being_served(registry, gcs_store) -> None:
    """D10: `selection` described the first model in serving order even when that one failed to
    load and the next one served."""
    db, manager, http = registry
    a = publish(db, gcs_store, score=0.5, data=tamper(build_artifact(1)))  # fails its own hash
    b = publish(db, gcs_store, score=0.1, seed=2)
    ids = (str(a["_id"]), str(b["_id"]))
    evaluate(db, {ids[0]: 0.4, ids[1]: 0.2}, a["data_end"])
    assert manager.refresh_now().entry_id == ids[1]
    model, _, selection = served(http)
    assert model == ids[1] and selection["model_id"] == ids[1]
    assert selection["role"] == "fallback" and ids[0] in selection["reason"]
    assert selection["ranked_first"]["model_id"] == ids[0] and selection["ranked_first"]["role"] == "champion"

    operator_actions.pin(db, ids[1], "known good", policy=POLICY)
    manager.refresh_now()
    model, _, selection = served(http)
    assert (model, selection["model_id"], selection["role"]) == (ids[1], ids[1], "pin")
