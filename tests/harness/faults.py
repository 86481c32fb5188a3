"""Fault injection on real servers: every case stops, corrupts or races something for real, then
asserts that no registry entry points at a missing or unverified artifact, that the fault is
visible, and that a re-run succeeds. Run alone with `pytest -m faults`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrec_dagster.localstack.process_groups import terminate
from batchrec_dagster.settings import Settings, load_settings
from tests.harness.servers import start_mongo


class OwnMongo:
    """An nx-27017 server of this test alone, which the test may stop and start again on the same data."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.uri, self.process = start_mongo(data_dir)

    def stop(self) -> None:
        terminate(self.process)
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


@pytest.fixture
def fault_settings(tmp_path: Path, own_mongo: OwnMongo) -> Settings:
    """The local deployment on this test's own MongoDB server and its own BATCHREC_HOME."""
    return load_settings({"BATCHREC_DEPLOYMENT": "local", "BATCHREC_HOME": str(tmp_path / "home"),
                          "MONGODB_URI": own_mongo.uri, "MONGODB_DATABASE": "faults"})
