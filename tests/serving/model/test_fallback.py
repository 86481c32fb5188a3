"""Falling back past bad registry entries (issue 13, point 5 and the `/model` report of point 12):
over real HTTP, registry in MongoDB over the wire, artifacts in the GCS emulator."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.harness.serving import Serving, build_artifact, tamper


def _publish_missing(serving: Serving, score: float, seed: int) -> dict:
    """A registry entry whose artifact is not in the store (deleted, or written elsewhere)."""
    entry = serving.publish(score=score, seed=seed)
    name = f"missing-{seed}.safetensors"
    serving.db["models"].update_one({"_id": entry["_id"]}, {"$set": {"file_name": name}})
    return {**entry, "file_name": name, "written_as": entry["file_name"]}


def test_a_cold_server_behind_many_bad_entries_becomes_ready_at_its_first_poll(serving: Serving) -> None:
    good = [serving.publish(score=0.10 + 0.01 * i, seed=i) for i in range(3)]
    missing = [_publish_missing(serving, 0.50 + 0.01 * i, seed=10 + i) for i in range(5)]
    corrupt = serving.publish(score=0.90, data=tamper(build_artifact(20)))
    assert serving.http.get("/readyz").status_code == 503

    result = serving.manager.refresh_now()
    # walked past all 6 bad entries, whatever their number, to the best good one
    assert result.outcome == "swapped" and result.entry_id == str(good[-1]["_id"])
    assert serving.http.get("/readyz").status_code == 200
    status = serving.http.get("/model").json()
    ranked_bad = [str(corrupt["_id"])] + [str(m["_id"]) for m in reversed(missing)]
    assert [e["entry_id"] for e in status["rejected_candidates"]] == ranked_bad
    assert status["failed_loads"] == 6
    # the report names one failure, the best-ranked, in both places
    assert status["last_swap_error"]["entry_id"] == str(corrupt["_id"])

    # the next polls remember the failures: nothing is downloaded again within the backoff
    assert serving.manager.refresh_now().outcome == "skipped_failed"
    assert serving.http.get("/model").json()["failed_loads"] == 6
    retry_at = min(datetime.fromisoformat(e["retry_at"])
                   for e in status["rejected_candidates"] if e["retry_at"])
    assert all(e["retry_at"] is None for e in status["rejected_candidates"][:1])  # bad bytes: never retried
    # after the backoff the missing files (maybe transient) are tried again, the corrupt one is not
    serving.clock.advance(retry_at - serving.clock() + timedelta(seconds=1))
    assert serving.manager.refresh_now().outcome == "failed"
    assert serving.http.get("/model").json()["failed_loads"] == 11
    assert serving.recommend([1000]).json()["model"]["id"] == str(good[-1]["_id"])

    # a missing file that shows up is served at its next try
    serving.store.put_new(missing[0]["file_name"], serving.store.read(missing[0]["written_as"]))
    serving.clock.advance(timedelta(hours=1))
    result = serving.manager.refresh_now()
    assert result.outcome == "swapped" and result.entry_id == str(missing[0]["_id"])


def test_outcome_and_swap_error_name_the_same_failed_model(serving: Serving) -> None:
    current = serving.publish(score=0.20, seed=1)
    assert serving.manager.refresh_now().outcome == "swapped"
    best = serving.publish(score=0.50, registered_sha256="0" * 64, seed=2)
    second = _publish_missing(serving, 0.40, seed=3)
    result = serving.manager.refresh_now()
    status = serving.http.get("/model").json()
    assert status["last_outcome"]["outcome"] == result.outcome == "failed"
    assert status["last_outcome"]["entry_id"] == status["last_swap_error"]["entry_id"] == str(best["_id"])
    assert status["last_outcome"]["message"] == status["last_swap_error"]["message"]
    assert [e["entry_id"] for e in status["rejected_candidates"]] == [str(best["_id"]), str(second["_id"])]
    assert status["model"]["id"] == str(current["_id"])
    # the next poll skips both and still names the same one in both places
    serving.manager.refresh_now()
    status = serving.http.get("/model").json()
    assert status["last_outcome"]["outcome"] == "skipped_failed"
    assert status["last_outcome"]["entry_id"] == status["last_swap_error"]["entry_id"] == str(best["_id"])


def test_the_challenger_is_the_next_model_that_loads_and_is_reused_after_a_swap(serving: Serving) -> None:
    serving.manager.load_challenger = True
    low = serving.publish(score=0.20, seed=1)
    serving.publish(score=0.25, data=tamper(build_artifact(2)))  # between: fails, skipped
    champion = serving.publish(score=0.30, seed=3)
    assert serving.manager.refresh_now().entry_id == str(champion["_id"])
    status = serving.http.get("/model").json()
    assert status["challenger"]["id"] == str(low["_id"])
    assert "not a loadable artifact" in status["challenger_error"]["message"]
    assert status["rejected_candidates"] == []  # ranked below the served model: not a swap failure
    served = serving.manager.current
    better = serving.publish(score=0.40, seed=4)
    assert serving.manager.refresh_now().entry_id == str(better["_id"])
    # the previous champion becomes the challenger without being loaded again
    assert serving.manager.challenger is served
    assert serving.http.get("/model").json()["failed_loads"] == 1


def test_an_entry_pointing_at_another_models_artifact_is_refused(serving: Serving, caplog) -> None:
    """D11: an entry whose file_name, sha256 and size_bytes were copied from another entry passed
    every check and served the other model's weights under its own id. The artifact's own run id
    and partition key must match the entry; the server refuses, says why, and keeps serving."""
    first = serving.publish(score=0.3, seed=1)
    assert serving.manager.refresh_now().entry_id == str(first["_id"])
    edited = serving.publish(score=0.9, seed=2, data_end=first["data_end"] - timedelta(hours=1))
    serving.db["models"].update_one({"_id": edited["_id"]}, {"$set": {
        k: first[k] for k in ("file_name", "sha256", "size_bytes")}})

    result = serving.manager.refresh_now()
    assert result.outcome == "failed" and result.entry_id == str(edited["_id"])
    assert "another model's" in result.message and first["run_id"] in result.message
    assert serving.recommend([1003]).json()["model"]["id"] == str(first["_id"])
    status = serving.http.get("/model").json()
    assert status["model"]["id"] == str(first["_id"])
    assert status["last_swap_error"]["retry_at"] is None  # not downloaded again
    assert any("another model's" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
