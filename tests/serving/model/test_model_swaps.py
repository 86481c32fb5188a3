"""Cold start, first load, swaps, stale and corrupt models: over real HTTP, registry in MongoDB,
artifacts in the GCS emulator. Polls are triggered with `manager.refresh_now()`."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx

from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.model.manager import ModelManager
from tests.harness.serving import ITEM_IDS, ServerThread, Serving, build_artifact, publish, tamper, wait_for


def test_cold_start_is_not_ready_and_answers_503(serving: Serving) -> None:
    assert serving.http.get("/healthz").json() == {"status": "ok"}
    ready = serving.http.get("/readyz")
    assert ready.status_code == 503
    assert "no model loaded yet" in ready.json()["detail"]

    assert serving.manager.refresh_now().outcome == "no_model"
    response = serving.recommend([1000, 1001])
    assert response.status_code == 503
    assert "registry holds no fresh model" in response.json()["detail"]
    assert serving.http.get("/users/nobody/recommendations").status_code == 503
    status = serving.http.get("/model").json()
    assert status["ready"] is False and status["model"] is None


def test_first_load_then_swap_to_a_better_model(serving: Serving) -> None:
    first = serving.publish(score=0.20, seed=1)
    assert serving.manager.refresh_now().outcome == "swapped"
    assert serving.http.get("/readyz").status_code == 200
    body = serving.recommend([1000, 1001], k=5).json()
    assert body["model"]["id"] == str(first["_id"])
    assert body["model"]["run_id"] == first["run_id"]

    status = serving.http.get("/model").json()
    assert status["ready"] and status["model"]["entry"]["sha256"] == first["sha256"]
    assert status["model"]["n_items"] == len(ITEM_IDS) and status["model"]["names_source"] == "artifact"
    loaded_at = datetime.fromisoformat(status["model"]["loaded_at"])
    assert abs(datetime.now(UTC) - loaded_at) < timedelta(minutes=5)
    assert status["last_swap_error"] is None

    assert serving.manager.refresh_now().outcome == "unchanged"
    better = serving.publish(score=0.30, seed=2)
    assert serving.manager.refresh_now().outcome == "swapped"
    assert serving.recommend([1000]).json()["model"]["id"] == str(better["_id"])
    assert serving.http.get("/model").json()["swaps"] == 2


def test_no_swap_to_a_stale_or_worse_model(serving: Serving) -> None:
    current = serving.publish(score=0.20)
    assert serving.manager.refresh_now().outcome == "swapped"
    # a higher score on data older than max_age (24h) is never a candidate
    serving.publish(score=0.90, data_end=datetime.now(UTC) - timedelta(hours=30), seed=3)
    serving.publish(score=0.10, seed=4)  # fresh but worse
    assert serving.manager.refresh_now().outcome == "unchanged"
    assert serving.recommend([1000]).json()["model"]["id"] == str(current["_id"])


def test_corrupt_artifacts_are_rejected_while_the_old_model_keeps_serving(serving: Serving) -> None:
    good = serving.publish(score=0.20)
    serving.manager.refresh_now()

    # 1. the blob does not match the registry's checksum (e.g. overwritten or damaged in transit)
    bad_sha = serving.publish(score=0.50, registered_sha256="0" * 64, seed=5)
    result = serving.manager.refresh_now()
    assert result.outcome == "failed" and "sha256" in result.message
    assert serving.recommend([1000]).json()["model"]["id"] == str(good["_id"])
    error = serving.http.get("/model").json()["last_swap_error"]
    assert error["entry_id"] == str(bad_sha["_id"]) and "sha256" in error["message"]
    # a permanently bad artifact is not downloaded again on every poll, and stays reported
    assert serving.manager.refresh_now().outcome == "skipped_failed"
    assert serving.http.get("/model").json()["last_swap_error"]["entry_id"] == str(bad_sha["_id"])

    # 2. registry and blob agree, but the artifact's own integrity hash catches the tampering
    serving.publish(score=0.60, data=tamper(build_artifact(6)))
    result = serving.manager.refresh_now()
    assert result.outcome == "failed" and "not a loadable artifact" in result.message
    # 3. wrong size registered
    serving.publish(score=0.70, registered_size=12, seed=7)
    result = serving.manager.refresh_now()
    assert result.outcome == "failed" and "size" in result.message
    assert serving.http.get("/readyz").status_code == 200
    assert serving.recommend([1000]).json()["model"]["id"] == str(good["_id"])

    fixed = serving.publish(score=0.80, seed=8)
    assert serving.manager.refresh_now().outcome == "swapped"
    assert serving.recommend([1000]).json()["model"]["id"] == str(fixed["_id"])
    assert serving.http.get("/model").json()["last_swap_error"] is None


def test_missing_blob_keeps_the_model_and_is_retried(serving: Serving) -> None:
    good = serving.publish(score=0.20)
    serving.manager.refresh_now()
    entry = serving.publish(score=0.50, seed=9)
    serving.db["models"].update_one({"_id": entry["_id"]}, {"$set": {"file_name": "missing.safetensors"}})
    result = serving.manager.refresh_now()
    assert result.outcome == "failed" and "download" in result.message
    assert serving.recommend([1000]).json()["model"]["id"] == str(good["_id"])
    # a download failure may be transient: it is tried again, after a backoff that doubles
    first_retry = datetime.fromisoformat(serving.http.get("/model").json()["last_swap_error"]["retry_at"])
    assert serving.manager.refresh_now().outcome == "skipped_failed"  # too early
    serving.clock.advance(first_retry - serving.clock() + timedelta(seconds=1))
    assert serving.manager.refresh_now().outcome == "failed"
    second = serving.http.get("/model").json()["last_swap_error"]
    assert second["entry_id"] == str(entry["_id"])
    # the first wait is one poll interval (60 s), the second twice that
    assert datetime.fromisoformat(second["retry_at"]) - serving.clock() > timedelta(seconds=100)


def test_cold_start_with_only_a_corrupt_model_stays_not_ready(serving: Serving) -> None:
    serving.publish(score=0.50, data=tamper(build_artifact(1)))
    assert serving.manager.refresh_now().outcome == "failed"
    ready = serving.http.get("/readyz")
    assert ready.status_code == 503 and "last load attempt failed" in ready.json()["detail"]
    assert serving.recommend([1000]).status_code == 503


def test_cold_start_falls_back_past_a_corrupt_best_model(serving: Serving) -> None:
    serving.publish(score=0.30, seed=2)  # ranks below `second`: never loaded
    second = serving.publish(score=0.40, seed=3)
    corrupt = serving.publish(score=0.50, data=tamper(build_artifact(1)))
    result = serving.manager.refresh_now()
    # the next one by the selection rule (score, then newest) serves; the corrupt one is reported
    assert result.outcome == "swapped" and result.entry_id == str(second["_id"])
    assert "not a loadable artifact" in result.message
    assert serving.http.get("/readyz").status_code == 200
    assert serving.recommend([1000]).json()["model"]["id"] == str(second["_id"])
    status = serving.http.get("/model").json()
    assert status["last_swap_error"]["entry_id"] == str(corrupt["_id"])
    assert [e["entry_id"] for e in status["rejected_candidates"]] == [str(corrupt["_id"])]
    # the next poll does not download the known-bad artifact again and keeps reporting it
    assert serving.manager.refresh_now().outcome == "skipped_failed"
    assert serving.http.get("/model").json()["rejected_candidates"][0]["entry_id"] == str(corrupt["_id"])
    assert serving.recommend([1000]).json()["model"]["id"] == str(second["_id"])
    # a good model above the corrupt one replaces both and clears the report
    best = serving.publish(score=0.60, seed=4)
    assert serving.manager.refresh_now().outcome == "swapped"
    status = serving.http.get("/model").json()
    assert status["model"]["id"] == str(best["_id"])
    assert status["last_swap_error"] is None and status["rejected_candidates"] == []


def test_a_loaded_server_falls_back_only_to_models_ranked_above_its_own(serving: Serving) -> None:
    current = serving.publish(score=0.20, seed=1)
    assert serving.manager.refresh_now().outcome == "swapped"
    # the best is corrupt and the second-best is worse than the serving model: keep serving
    serving.publish(score=0.10, seed=2)
    corrupt = serving.publish(score=0.50, registered_sha256="0" * 64, seed=3)
    result = serving.manager.refresh_now()
    assert result.outcome == "failed" and result.entry_id == str(corrupt["_id"])
    assert serving.recommend([1000]).json()["model"]["id"] == str(current["_id"])
    # a good model between the corrupt best and the serving one: it replaces the serving one
    between = serving.publish(score=0.30, seed=4)
    result = serving.manager.refresh_now()
    assert result.outcome == "swapped" and result.entry_id == str(between["_id"])
    assert serving.recommend([1000]).json()["model"]["id"] == str(between["_id"])
    status = serving.http.get("/model").json()
    assert [e["entry_id"] for e in status["rejected_candidates"]] == [str(corrupt["_id"])]
    assert "sha256" in status["last_swap_error"]["message"]


def test_requests_in_flight_during_swaps_never_fail(served: Serving) -> None:
    serving = served  # four clients over real connections while the model swaps under them
    models = [serving.publish(score=0.1, seed=0)]
    serving.manager.refresh_now()
    errors: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=serving.url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/recommendations", json={"repo_ids": [1000, 1003], "k": 5})
                if response.status_code != 200 or len(response.json()["recommendations"]) != 5:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                else:
                    seen.add(response.json()["model"]["id"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: str(models[0]["_id"]) in seen, message="answers from the first model")
        for i in range(1, 4):
            models.append(serving.publish(score=0.1 * (i + 1), seed=i))
            assert serving.manager.refresh_now().outcome == "swapped"
            wait_for(lambda i=i: str(models[i]["_id"]) in seen, message=f"answers from model {i}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert seen == {str(m["_id"]) for m in models}


def test_the_poller_loads_and_swaps_on_its_own(mongo_db, gcs_store) -> None:
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=0.05)
    with ServerThread(create_app(manager, mongo_db)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/readyz").status_code == 503
            first = publish(mongo_db, gcs_store, score=0.2)
            wait_for(lambda: http.get("/readyz").status_code == 200, message="first load by the poller")
            assert http.get("/model").json()["model"]["id"] == str(first["_id"])
            better = publish(mongo_db, gcs_store, score=0.3, seed=1)
            wait_for(lambda: http.get("/model").json()["model"]["id"] == str(better["_id"]),
                     message="swap by the poller")
    assert manager._thread is None  # the app's shutdown stopped the poller
