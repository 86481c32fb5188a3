"""The CLI on a registry that other tools also write to: bad entries print, missing artifacts fall back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from batchrec_dagster.cli.commands import main
from batchrec_dagster.registry.champions import CHAMPIONS, serving_order
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.registry.models import MODELS
from batchrec_dagster.storage.blobs import LocalBlobStore
from tests.harness.serving import publish

POLICY = SelectionPolicy()  # the defaults: 24 h maximum age, ties within 1e-4


def _store(home: Path) -> LocalBlobStore:
    return LocalBlobStore(home / "storage" / "models")


def test_registry_lists_entries_with_wrong_types(local_env: Path, mongo_db, capsys) -> None:
    good = publish(mongo_db, _store(local_env), score=0.3)
    mongo_db[MODELS].insert_many([
        {"file_name": 42, "score": "high", "created_at": "yesterday", "run_id": None},
        {"partition_key": {"$gt": ""}, "popularity_metrics": [1, 2]},
    ])
    assert main(["registry", "-v"]) == 0
    out = capsys.readouterr().out
    assert good["file_name"] in out and out.count("?") >= 6  # the bad fields print as "?"
    assert "Selected:" in out


def test_recommend_falls_back_past_a_missing_artifact(local_env: Path, mongo_db, capsys) -> None:
    store = _store(local_env)
    served = publish(mongo_db, store, score=0.3, seed=1)
    missing = publish(mongo_db, store, score=0.9, seed=2)
    (store.root / missing["file_name"]).unlink()
    mongo_db["users"].insert_one({"_id": 5, "login": "someone"})
    mongo_db["stars"].insert_one({"user_id": 5, "repo_id": 1001, "starred_at": served["data_end"]})
    assert main(["recommend", "--user", "someone", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert f"passed over a better-ranked model that failed: {missing['_id']}" in out
    assert f"known to model {served['file_name']}" in out and "Top-3" in out


def test_recommend_refuses_a_user_id_that_is_a_query(local_env: Path, mongo_db, capsys) -> None:
    store = _store(local_env)
    publish(mongo_db, store, score=0.3)
    mongo_db["users"].insert_one({"_id": {"$gt": 0}, "login": "injector"})
    mongo_db["stars"].insert_many([{"user_id": i, "repo_id": 1001} for i in range(3)])
    assert main(["recommend", "--user", "injector"]) == 1
    assert "no user with login 'injector'" in capsys.readouterr().err


def test_hand_made_champion_records_and_entries_give_no_traceback(local_env: Path, mongo_db, capsys) -> None:
    """Issue 18 D8: a `champions` document whose model_id is not an id (hand-made) made `registry`,
    `recommend` and `pin` end in a TypeError, and kept a cold server unready (it reads the same
    serving_order); `pin` on an entry whose data_end is missing or a string was a traceback."""
    store = _store(local_env)
    good = publish(mongo_db, store, score=0.3)
    good_id = str(good["_id"])
    now = datetime.now(UTC)
    mongo_db[CHAMPIONS].insert_many([
        {"model_id": "the-good-one", "promoted_at": now, "reason": "typed by hand"},
        {"model_id": 12345, "promoted_at": now - timedelta(seconds=1)},
        {"model_id": good_id, "promoted_at": "yesterday"},
    ])
    order = serving_order(mongo_db, POLICY)   # what a cold server polls before it is ready
    assert [str(e["_id"]) for e in order] == [good_id]
    assert order[0]["selection"]["skipped_champion_records"] >= 2

    assert main(["registry", "-v"]) == 0
    assert f"serving:  {good_id}" in capsys.readouterr().out
    mongo_db["users"].insert_one({"_id": 5, "login": "someone"})
    mongo_db["stars"].insert_one({"user_id": 5, "repo_id": 1001, "starred_at": good["data_end"]})
    assert main(["recommend", "--user", "someone", "-k", "3"]) == 0
    assert "Top-3" in capsys.readouterr().out
    assert main(["registry", "pin", good_id]) == 0
    assert f"serving:  {good_id} (pin)" in capsys.readouterr().out

    for data_end in ("2026-03-01T12:00:00Z", None):
        entry = {"run_id": f"hand-{data_end}", "model_kind": "recvae", "file_name": "x.pt"}
        if data_end is not None:
            entry["data_end"] = data_end
        hand_made = mongo_db[MODELS].insert_one(entry).inserted_id
        assert main(["registry", "pin", str(hand_made)]) == 1
        err = capsys.readouterr().err
        assert "has no data_end date" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_cold_server_becomes_ready_past_a_hand_made_champion_record(mongo_db, local_store) -> None:
    """D8: the server's first poll raised the same TypeError, so /readyz never said 200. The app and
    its model manager (the production ranking) over real HTTP; the test polls once by hand."""
    import httpx

    from batchrec_dagster.serving.api.app import create_app
    from batchrec_dagster.serving.model.manager import ModelManager
    from tests.harness.serving import ServerThread

    good = publish(mongo_db, local_store, score=0.3)
    mongo_db[CHAMPIONS].insert_one({"model_id": "typed-by-hand", "promoted_at": datetime.now(UTC)})
    manager = ModelManager(mongo_db, local_store, poll_seconds=None)
    with ServerThread(create_app(manager, mongo_db)) as server, httpx.Client(base_url=server.url) as http:
        manager.refresh_now()
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model"]["id"] == str(good["_id"])
