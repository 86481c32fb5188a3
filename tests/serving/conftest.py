"""Serving fixtures: the API served by uvicorn on a free loopback port, with the registry in
MongoDB over the wire and artifacts in the GCS emulator (session servers from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batchrec_dagster.serving.api.app import create_app
from batchrec_dagster.serving.model.manager import ModelManager
from batchrec_dagster.storage.blobs import BlobStore
from tests.harness.serving import Clock, ServerThread, Serving, by_own_score


@pytest.fixture
def serving(mongo_db: Any, gcs_store: BlobStore) -> Iterator[Serving]:
    """The API with no poller: tests trigger polls with `manager.refresh_now()`; candidates in
    order of their own score (helpers.by_own_score)."""
    clock = Clock()
    manager = ModelManager(mongo_db, gcs_store, poll_seconds=None, clock=clock, rank=by_own_score)
    app = create_app(manager, mongo_db)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Serving(server.url, http, manager, mongo_db, gcs_store, clock)
