"""Fault injection on real servers: every case stops, corrupts or races something for real, then
asserts that no registry entry points at a missing or unverified artifact, that the fault is
visible, and that a re-run succeeds. Run alone with `pytest -m faults`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrec_dagster.settings import get_settings
from tests.harness.servers import start_mongo, stop

STOPPED_SERVER_TIMEOUT_MS = 3_000
FAULTS_DATABASE = "faults"


class OwnMongo:
    """An nx-27017 server of this test alone, which the test may stop and start again on the same data."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        uri, self.process = start_mongo(data_dir)
        # a client finds the server stopped after 3 s instead of the default 10 s: each step that
        # needs it fails sooner, and no assertion depends on how long it took
        self.uri = f"{uri}&serverSelectionTimeoutMS={STOPPED_SERVER_TIMEOUT_MS}"

    def stop(self) -> None:
        stop(self.process)
        assert self.process.poll() is not None, "the MongoDB server is still running"

    def start(self) -> None:
        port = int(self.uri.rsplit(":", 1)[1].split("/")[0])
        from batchrec_dagster.sources.embedded_mongo import mongo_uri, start_server, wait_until_serving

        self.process = start_server(self.data_dir, port)
        wait_until_serving(mongo_uri("127.0.0.1", port), self.process)


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[OwnMongo]:
    server = OwnMongo(tmp_path / "own-mongo")
    yield server
    server.stop()


def set_fault_env(patch: pytest.MonkeyPatch, home: Path, server: OwnMongo) -> Path:
    """The local deployment on `server` (database "faults") with `home` as BATCHREC_HOME."""
    for name, value in {"BATCHREC_DEPLOYMENT": "local", "BATCHREC_HOME": str(home),
                        "MONGODB_URI": server.uri, "MONGODB_DATABASE": FAULTS_DATABASE}.items():
        patch.setenv(name, value)
    patch.delenv("DAGSTER_HOME", raising=False)
    get_settings.cache_clear()
    return home


@pytest.fixture
def fault_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, own_mongo: OwnMongo) -> Path:
    """The local deployment on this test's own MongoDB server and its own BATCHREC_HOME."""
    return set_fault_env(monkeypatch, tmp_path / "home", own_mongo)


@pytest.fixture(scope="module")
def module_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnMongo]:
    """An nx-27017 server of this test module alone (stopped and checked gone at its end)."""
    server = OwnMongo(tmp_path_factory.mktemp("module-mongo"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_fault_env(tmp_path_factory: pytest.TempPathFactory, module_mongo: OwnMongo) -> Iterator[Path]:
    """fault_env for a whole module: its tests share the server and BATCHREC_HOME."""
    with pytest.MonkeyPatch.context() as patch:
        yield set_fault_env(patch, tmp_path_factory.mktemp("fault-home") / "home", module_mongo)
