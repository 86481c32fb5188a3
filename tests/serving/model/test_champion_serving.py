"""A running server (poller on) follows the registry's one answer: a promotion on comparable scores,
an operator's pin and a ban are each seen in `/model` within one poll."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from batchrec_dagster.registry import champions, evaluations, operator_actions
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.api.status import manager_status
from batchrec_dagster.serving.model.manager import ModelManager
from tests.harness.serving import ServerThread, publish, wait_for

POLICY = SelectionPolicy()  # the defaults: 24 h maximum age, ties within 1e-4

POLL_S = 0.3
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def registry_db(mongo_db: Any) -> Any:
    """The test database with the registry's evaluation and champion indexes."""
    for ensure in (evaluations.ensure_indexes, champions.ensure_indexes):
        ensure(mongo_db)
    return mongo_db


@pytest.fixture
def live(registry_db: Any, gcs_store: Any) -> Iterator[tuple[httpx.Client, Any, Any]]:
    mongo_db = registry_db
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=POLL_S)  # the production ranking
    with ServerThread(create_app(manager, mongo_db)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        manager.start()
        try:
            yield http, mongo_db, gcs_store
        finally:
            manager.stop()


def _served(http: httpx.Client) -> str | None:
    return (http.get("/model").json().get("model") or {}).get("id")


def _within_a_poll(http: httpx.Client, model_id: str, what: str) -> None:
    # a few polls of slack for a loaded shared machine; each poll is POLL_S apart
    wait_for(lambda: _served(http) == model_id, timeout_s=20 * POLL_S + 10, message=what)


def test_promotion_pin_and_ban_reach_a_running_server(live) -> None:
    http, db, store = live
    older = publish(db, store, score=0.9, seed=1, data_end=HOUR - timedelta(hours=2))
    newer = publish(db, store, score=0.1, seed=2, data_end=HOUR - timedelta(hours=1))
    older_id, newer_id = str(older["_id"]), str(newer["_id"])
    assert champions.decide_and_record(db, POLICY).champion_id == newer_id  # unscored: the newest serves
    _within_a_poll(http, newer_id, "the first champion")

    # the window of the last hour scores both; the older model is clearly better on it
    for model_id, score in ((older_id, 0.40), (newer_id, 0.30)):
        evaluations.record_evaluation(db, {"model_id": model_id, "window_start": HOUR - timedelta(hours=1),
                                           "window_end": HOUR, "score": score})
    decision = champions.decide_and_record(db, POLICY)
    assert decision.promoted and decision.champion_id == older_id
    _within_a_poll(http, older_id, "the promotion")
    assert http.get("/model").json()["selection"]["champion"]["model_id"] == older_id

    operator_actions.pin(db, newer_id, reason="rollback drill", policy=POLICY)
    _within_a_poll(http, newer_id, "the pin")
    assert http.get("/model").json()["selection"]["pin"]["model_id"] == newer_id
    operator_actions.unpin(db, reason="drill over")
    _within_a_poll(http, older_id, "the unpin")

    operator_actions.ban(db, older_id, reason="bad recommendations reported", policy=POLICY)
    _within_a_poll(http, newer_id, "the ban")
    assert older_id in http.get("/model").json()["selection"]["banned"]


def test_model_and_selection_are_read_as_one_pair(registry_db: Any, gcs_store: Any) -> None:
    """/model never pairs the served model with the reason another one served: a reader thread
    checks every status it reads while the test swaps models back and forth (pin, unpin). The
    interpreter switches threads every microsecond here, so a reader lands inside a swap often."""
    mongo_db = registry_db
    older = str(publish(mongo_db, gcs_store, score=0.9, seed=1, data_end=HOUR - timedelta(hours=2))["_id"])
    newer = str(publish(mongo_db, gcs_store, score=0.1, seed=2, data_end=HOUR - timedelta(hours=1))["_id"])
    for model_id, score in ((older, 0.40), (newer, 0.30)):
        evaluations.record_evaluation(mongo_db, {"model_id": model_id, "window_end": HOUR, "score": score,
                                                 "window_start": HOUR - timedelta(hours=1)})
    assert champions.decide_and_record(mongo_db, POLICY).champion_id == older
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=None)  # polled by the test
    manager.refresh_now()
    reads, mismatches = 0, []
    stop = threading.Event()

    def read() -> None:
        nonlocal reads
        while not stop.is_set():
            status = manager_status(manager)
            served, selection = (status["model"] or {}).get("id"), status["selection"] or {}
            reads += 1
            if served is not None and selection.get("model_id") != served:
                mismatches.append((served, selection.get("model_id")))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader = threading.Thread(target=read, name="status-reader")
    reader.start()
    try:
        for _ in range(10):
            operator_actions.pin(mongo_db, newer, reason="drill", policy=POLICY)
            manager.refresh_now()
            operator_actions.unpin(mongo_db, reason="drill over")
            manager.refresh_now()
    finally:
        stop.set()
        reader.join(30)
        sys.setswitchinterval(interval)
    assert not reader.is_alive()
    assert manager.swaps == 21 and reads > 0 and mismatches == [], mismatches[:3]
