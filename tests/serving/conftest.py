"""Serving fixtures: the API with the registry in MongoDB over the wire and artifacts in the GCS
emulator (session servers from tests/conftest.py), called in-process for route tests (`serving`)
or served by uvicorn on a free loopback port for the HTTP-level ones (`served`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchrec_dagster.serving.api.app import ServingApp, create_app
from batchrec_dagster.serving.model.manager import ModelManager
from batchrec_dagster.storage.blobs import BlobStore
from tests.harness.asgi import in_process
from tests.harness.serving import Clock, ServerThread, Serving, by_own_score


def _api(mongo_db: Any, gcs_store: BlobStore) -> tuple[ServingApp, ModelManager, Clock]:
    """The API with no poller: tests trigger polls with `manager.refresh_now()`; candidates in
    order of their own score (helpers.by_own_score)."""
    clock = Clock()
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=None, clock=clock, rank=by_own_score)
    return create_app(manager, mongo_db), manager, clock


@pytest.fixture
def serving(mongo_db: Any, gcs_store: BlobStore) -> Iterator[Serving]:
    """The app called in-process (the ASGI app, its lifespan run as a server runs it): routes,
    bodies, status codes and headers, without a socket."""
    app, manager, clock = _api(mongo_db, gcs_store)
    with in_process(app) as http:
        yield Serving(str(http.base_url), http, manager, mongo_db, gcs_store, clock)


@pytest.fixture
def served(mongo_db: Any, gcs_store: BlobStore) -> Iterator[Serving]:
    """The same app served by uvicorn on 127.0.0.1: for tests of connections, sockets and
    requests in flight from several clients."""
    app, manager, clock = _api(mongo_db, gcs_store)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Serving(server.url, http, manager, mongo_db, gcs_store, clock)
