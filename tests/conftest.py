"""Shared fixtures: a MongoDB-wire server and a GCS emulator, started for real once per session.

`BATCHREC_TEST_MONGODB_URI` points the tests at a real MongoDB instead of the embedded server.
Each test gets its own database and its own bucket, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from batchrec_dagster.localstack.process_groups import terminate
from batchrec_dagster.settings import get_settings
from batchrec_dagster.sources.mongo import connect
from batchrec_dagster.storage.blobs import GCSBlobStore, LocalBlobStore
from tests.harness.servers import external_mongo_uri, start_gcs_emulator, start_mongo
from tests.harness.signals import current_dispositions, restore_dispositions

SHARED_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "github-stars-tiny"


# fixtures of the harness, shared by every folder of the mirror
pytest_plugins = ["tests.harness.deployments", "tests.harness.faults", "tests.harness.postgres"]

# The modules that drive a real dagster-webserver + daemon spend most of their time waiting on
# Dagster's fixed intervals (docs/testing.md). `make test` runs the suite on parallel workers,
# one module per worker at a time (pytest-xdist, --dist loadfile, in collection order), so these
# start first, longest first, and the other workers fill the waits with the rest of the suite.
STARTED_FIRST = (
    "tests/defs/test_end_to_end.py",
    "tests/defs/instance/test_stale_runs.py",
    "tests/defs/instance/test_training_pool.py",
    "tests/defs/test_asset_graph_runs.py",
    "tests/localstack/test_prod_stack.py",
    "tests/localstack/test_dev_server.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return STARTED_FIRST.index(path) if path in STARTED_FIRST else len(STARTED_FIRST)

    items.sort(key=rank)  # stable: every other module keeps its order


@pytest.fixture(autouse=True)
def signal_dispositions() -> Iterator[None]:
    """SIGTERM and SIGINT as the test found them (see tests/harness/signals.py: in-process Dagster runs
    leave SIGTERM ignored when the suite starts with SIGINT ignored)."""
    saved = current_dispositions()
    yield
    restore_dispositions(saved)


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """For the few tests of reading the environment itself (get_settings reads it once per
    process): the cache is empty when they start and emptied when they end. Every other test
    passes a Settings object (local_settings, prod_settings), or the environment of a process it
    starts, or local_env/prod_env for the CLI's commands run in-process."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def mongo_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = external_mongo_uri()
    if uri:
        yield uri
        return
    uri, process = start_mongo(tmp_path_factory.mktemp("mongo"))
    yield uri
    terminate(process)


@pytest.fixture
def mongo_db(mongo_server_uri: str) -> Iterator[pymongo.database.Database]:
    client = connect(mongo_server_uri)
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="session")
def gcs_emulator_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    host, process = start_gcs_emulator(tmp_path_factory.mktemp("gcs"))
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    yield host
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous
    terminate(process)


@pytest.fixture
def gcs_client(gcs_emulator_host: str) -> gcs.Client:
    return gcs.Client(project="batchrec-test", credentials=AnonymousCredentials())


@pytest.fixture
def gcs_bucket(gcs_client: gcs.Client) -> str:
    name = f"batchrec-test-{uuid.uuid4().hex[:10]}"
    gcs_client.create_bucket(name)
    return name


@pytest.fixture
def gcs_store(gcs_client: gcs.Client, gcs_bucket: str) -> GCSBlobStore:
    return GCSBlobStore(gcs_client, gcs_bucket, prefix="models")


@pytest.fixture
def local_store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "store")


@pytest.fixture
def shared_dataset() -> Path:
    if not (SHARED_DATASET / "stars.csv").is_file():
        pytest.skip(f"shared dataset not found at {SHARED_DATASET}")
    return SHARED_DATASET
