"""Serving test helpers: real artifacts (tiny untrained RecVAE), a registry in MongoDB over the wire,
artifacts in the GCS emulator, and the API served by uvicorn on a free loopback port."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import uvicorn

from batchrec_dagster.registry.models import ensure_indexes, entries_with_data_end, register_model
from batchrec_dagster.serving.model.manager import ModelManager
from batchrec_dagster.serving.process.runtime import uvicorn_config
from batchrec_dagster.storage.blobs import BlobStore
from recvae import Recommender, RecVAE, RecVAEConfig, dump_artifact
from tests.harness.servers import free_port

N_ITEMS = 40
ITEM_IDS = np.arange(1000, 1000 + N_ITEMS, dtype=np.int64)  # repository ids, not column indices
NAMES = [f"owner{i % 7}/repo-{i}" for i in ITEM_IDS.tolist()]


def build_artifact(seed: int = 0, *, item_ids: np.ndarray = ITEM_IDS, names: list[str] | None = None,
                   with_names: bool = True, identity: dict[str, str] | None = None) -> bytes:
    """An untrained tiny RecVAE: real weights and vocabulary, loads like any trained one.
    `identity`: the run_id and partition_key the pipeline writes into the artifact."""
    config = RecVAEConfig(hidden_dim=16, latent_dim=8, seed=seed, epochs=1)
    model = RecVAE(len(item_ids), config)
    popularity = np.arange(len(item_ids), 0, -1, dtype=np.float32)  # first id most popular
    recommender = Recommender(model, item_ids, popularity, device="cpu")
    names = names or [f"owner{i % 7}/repo-{i}" for i in item_ids.tolist()]
    extra = {**({"item_names": names} if with_names else {}), **(identity or {})}
    return dump_artifact(recommender, config=config, metrics={"ndcg@100": 0.1}, extra=extra)


def publish(db: Any, store: BlobStore, *, score: float, data: bytes | None = None,
            data_end: datetime | None = None, registered_sha256: str | None = None,
            registered_size: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Write an artifact to the store and register it, as the pipeline's last asset does (an
    artifact built here carries its run id and partition key, as the pipeline's do)."""
    run_id = uuid.uuid4().hex
    data_end = data_end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    partition_key = (data_end - timedelta(hours=1)).strftime("%Y-%m-%d-%H:00")
    if data is None:
        data = build_artifact(seed, identity={"run_id": run_id, "partition_key": partition_key})
    blob = store.put_new(f"recvae_{score:.4f}_{run_id}.safetensors", data)
    ensure_indexes(db)
    return register_model(db, {
        "run_id": run_id, "partition_key": partition_key,
        "model_kind": "recvae", "score": score, "file_name": blob.name, "bucket": store.location,
        "uri": blob.uri, "sha256": registered_sha256 or blob.sha256,
        "size_bytes": registered_size if registered_size is not None else blob.size_bytes,
        "data_start": data_end - timedelta(hours=24 * 30), "data_end": data_end,
        "metrics": {"ndcg@100": score}, "config": {}, "code_version": "test", "epochs": 1,
    })


def by_own_score(db: Any, now: datetime, policy: Any) -> list[dict[str, Any]]:
    """Fresh models by their own registry score, the highest first (a tie: the newest registration).
    Not a registry rule (own scores do not compare across models): a simple order the tests of the
    server's walk itself (fallback, backoff, swaps) control through `score`, without staging
    evaluation windows. The server's order, the champion's, is tested in test_champion.py."""
    fresh = entries_with_data_end(db, since=now - policy.max_age)
    return sorted(fresh, key=lambda e: (e["score"], e["created_at"]), reverse=True)


def wait_for(predicate: Any, timeout_s: float = 20.0, message: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {message}")
        time.sleep(0.01)


class Clock:
    """Wall-clock time plus an offset that a test moves forward (backoff, model age)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


class ServerThread:
    """uvicorn serving an app on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: Any, **config: Any):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        settings = uvicorn_config(app, host="127.0.0.1", port=self.port)
        for name, value in config.items():  # e.g. http=: a protocol with other timeouts
            setattr(settings, name, value)
        self.server = uvicorn.Server(settings)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), message="uvicorn start")
        if not self.server.started:
            raise RuntimeError("uvicorn failed to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Serving:
    url: str
    http: httpx.Client
    manager: ModelManager
    db: Any
    store: BlobStore
    clock: Clock

    def publish(self, **kwargs: Any) -> dict[str, Any]:
        return publish(self.db, self.store, **kwargs)

    def recommend(self, repo_ids: list[int], k: int = 5) -> httpx.Response:
        return self.http.post("/recommendations", json={"repo_ids": repo_ids, "k": k})


def tamper(data: bytes) -> bytes:
    """Flip one byte in the tensor section: the size is unchanged, the artifact's own hash is not."""
    corrupt = bytearray(data)
    corrupt[-10] ^= 0xFF
    return bytes(corrupt)

