"""The approximate top-k path over real HTTP: the index stored next to the artifact in the GCS
emulator, named by the registry entry in MongoDB, verified (or rebuilt) by the server before a
swap, and swapped together with the weights it was built from."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.model.ann_index import AnnOptions
from batchrec_dagster.serving.model.manager import ModelManager
from batchrec_dagster.storage.blobs import BlobStore
from recvae import ann, load_artifact
from tests.harness.serving import (
    ITEM_IDS,
    Clock,
    ServerThread,
    Serving,
    build_artifact,
    by_own_score,
    publish,
    wait_for,
)

FLAT = ann.IndexParams("flat")  # exact inner products: the approximate path must equal exact
USERS = [[1000, 1003], [1001], [1005, 1007, 1011, 1013, 1017, 1019, 1023, 1029], []]


def serve(db: Any, store: BlobStore, options: AnnOptions | None) -> Iterator[Serving]:
    clock = Clock()
    manager = ModelManager(db, store, poll_seconds=None, clock=clock, rank=by_own_score, ann=options)
    with (ServerThread(create_app(manager, db)) as server,
          httpx.Client(base_url=server.url, timeout=30) as http):
        yield Serving(server.url, http, manager, db, store, clock)


@pytest.fixture
def approx(mongo_db: Any, gcs_store: BlobStore) -> Iterator[Serving]:
    """A server that answers every catalog (min_items=1) from a flat inner-product index."""
    yield from serve(mongo_db, gcs_store, AnnOptions(min_items=1, params=FLAT))


def publish_with_index(serving: Serving, *, score: float, seed: int, index_seed: int | None = None,
                       index_bytes: Any = None, params: ann.IndexParams = FLAT) -> dict[str, Any]:
    """Publish a model and its index as recvae_model does (index_seed: build the index from another
    model's decoder; index_bytes(data): store other bytes under the index's name)."""
    data = build_artifact(seed)
    entry = publish(serving.db, serving.store, score=score, data=data)
    source = build_artifact(index_seed) if index_seed is not None else data
    built = ann.build_for_model(load_artifact(source, device="cpu").recommender.model, params)
    stored_bytes = index_bytes(built.data) if index_bytes else built.data
    blob = serving.store.put_new(f"{entry['file_name']}.faiss", stored_bytes)
    record = {**built.to_dict(), "file_name": blob.name, "sha256": blob.sha256,
              "size_bytes": blob.size_bytes, "artifact_sha256": entry["sha256"], "recall": 1.0,
              "recall_k": 20, "recall_users": 10}
    serving.db["models"].update_one({"_id": entry["_id"]}, {"$set": {"ann_index": record}})
    return {**entry, "ann_index": record}


def exact_top(data: bytes, repo_ids: list[int], k: int) -> list[int]:
    """The exact top-k repository ids by the library's reference scorer (`Recommender`)."""
    rec = load_artifact(data, device="cpu").recommender
    idx, _ = rec.recommend([rec.index_of(repo_ids).tolist()], k)
    return [int(rec.item_ids[i]) for i in idx[0] if i >= 0]


def answered(serving: Serving, repo_ids: list[int], k: int) -> tuple[str, list[int]]:
    response = serving.recommend(repo_ids, k=k)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["model"]["id"], [r["repo_id"] for r in body["recommendations"]]


def test_the_approximate_path_gives_the_exact_top_k_without_own_repositories(approx: Serving) -> None:
    entry = publish_with_index(approx, score=0.2, seed=3)
    assert approx.manager.refresh_now().outcome == "swapped"
    top_k = approx.http.get("/model").json()["model"]["top_k"]
    assert top_k["path"] == "approximate" and top_k["source"] == "registry"
    assert top_k["file_name"] == entry["ann_index"]["file_name"] and top_k["recall"] == 1.0
    data = build_artifact(3)
    for user in USERS:
        for k in (5, 20, len(ITEM_IDS)):
            _, got = answered(approx, user, k)
            assert got == exact_top(data, user, k)
            assert not set(got) & set(user)
            assert len(got) == min(k, len(ITEM_IDS) - len(user))  # k means k


def test_a_registry_ivfpq_index_is_searched_with_at_least_its_recorded_knobs(
        mongo_db: Any, gcs_store: BlobStore) -> None:
    # the server's own settings probe 1 list and re-rank 1 candidate per result; the index was
    # recorded with every list probed and every repository re-ranked, which makes it exact
    recorded = ann.IndexParams("ivfpq", nlist=2, nprobe=2, refine=len(ITEM_IDS))
    narrow = AnnOptions(min_items=1, params=ann.IndexParams("ivfpq", nprobe=1, refine=1))
    for serving in serve(mongo_db, gcs_store, narrow):
        publish_with_index(serving, score=0.2, seed=6, params=recorded)
        assert serving.manager.refresh_now().outcome == "swapped"
        top_k = serving.http.get("/model").json()["model"]["top_k"]
        assert (top_k["source"], top_k["kind"]) == ("registry", "ivfpq")
        assert (top_k["nprobe"], top_k["refine"]) == (2, len(ITEM_IDS))
        for user in USERS[:3]:
            assert answered(serving, user, 10)[1] == exact_top(build_artifact(6), user, 10)


def test_a_small_catalog_is_scored_exactly(mongo_db: Any, gcs_store: BlobStore) -> None:
    for serving in serve(mongo_db, gcs_store, AnnOptions(min_items=len(ITEM_IDS) + 1, params=FLAT)):
        publish_with_index(serving, score=0.2, seed=3)
        serving.manager.refresh_now()
        top_k = serving.http.get("/model").json()["model"]["top_k"]
        assert top_k["path"] == "exact" and "below the switch-over" in top_k["reason"]
        assert answered(serving, USERS[0], 10)[1] == exact_top(build_artifact(3), USERS[0], 10)


def _missing(serving: Serving, entry: dict[str, Any]) -> None:
    serving.store.delete(entry["ann_index"]["file_name"])


BROKEN = {
    # case: (how the stored index is spoiled, what /model says about it)
    "missing": ({"after": _missing}, "is missing"),
    "truncated": ({"index_bytes": lambda data: data[: len(data) // 2]}, "not a faiss index"),
    "another model's index": ({"index_seed": 9}, "not this model's decoder rows"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_index_is_rebuilt_and_the_answers_stay_exact(approx: Serving, case: str) -> None:
    how, reason = BROKEN[case]
    entry = publish_with_index(approx, score=0.2, seed=4, index_seed=how.get("index_seed"),
                               index_bytes=how.get("index_bytes"))
    if "after" in how:
        how["after"](approx, entry)
    assert approx.manager.refresh_now().outcome == "swapped"
    top_k = approx.http.get("/model").json()["model"]["top_k"]
    assert top_k["path"] == "approximate" and top_k["source"] == "rebuilt"
    assert reason in top_k["reason"]
    assert answered(approx, USERS[2], 10)[1] == exact_top(build_artifact(4), USERS[2], 10)


def test_an_index_whose_bytes_differ_from_the_record_is_rebuilt(approx: Serving) -> None:
    entry = publish_with_index(approx, score=0.2, seed=5)
    approx.db["models"].update_one({"_id": entry["_id"]}, {"$set": {"ann_index.sha256": "0" * 64}})
    approx.manager.refresh_now()
    top_k = approx.http.get("/model").json()["model"]["top_k"]
    assert top_k["source"] == "rebuilt" and "sha256" in top_k["reason"]
    assert answered(approx, USERS[0], 10)[1] == exact_top(build_artifact(5), USERS[0], 10)


def test_a_hot_swap_changes_weights_and_index_together(approx: Serving) -> None:
    user, k = [1000, 1003, 1010], 10
    seeds = [0, 1, 2, 3]
    expected = {}  # model id -> its own exact top-k; a model's code with another's index differs
    models = [publish_with_index(approx, score=0.1, seed=seeds[0])]
    expected[str(models[0]["_id"])] = exact_top(build_artifact(seeds[0]), user, k)
    approx.manager.refresh_now()
    wrong: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=approx.url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/recommendations", json={"repo_ids": user, "k": k})
                body = response.json()
                model_id = body["model"]["id"]
                got = [r["repo_id"] for r in body["recommendations"]]
                if response.status_code != 200 or got != expected.get(model_id):
                    wrong.append(f"{response.status_code} {model_id}: {got}")
                seen.add(model_id)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: str(models[0]["_id"]) in seen, message="answers from the first model")
        for i in range(1, len(seeds)):
            entry = publish_with_index(approx, score=0.1 * (i + 1), seed=seeds[i])
            expected[str(entry["_id"])] = exact_top(build_artifact(seeds[i]), user, k)
            models.append(entry)
            assert approx.manager.refresh_now().outcome == "swapped"
            wait_for(lambda i=i: str(models[i]["_id"]) in seen, message=f"answers from model {i}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert len({tuple(v) for v in expected.values()}) == len(seeds)  # the models disagree
    assert wrong == []
    assert seen == set(expected)
