"""Fixtures of the production-topology tests: a folder a local PostgreSQL cluster can live in."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrec_dagster.localstack.postgres import DEFAULT_PG_BIN, LocalPostgres, find_pg_bin


def require_postgres() -> Path:
    """PostgreSQL's bin folder, or skip the test with the reason."""
    found = find_pg_bin()
    if found is None:
        pytest.skip(f"PostgreSQL binaries (initdb, pg_ctl) not found in {DEFAULT_PG_BIN} or on PATH; "
                    f"install PostgreSQL 15 to run the PostgreSQL tests")
    return found


@pytest.fixture
def pg_root() -> Iterator[Path]:
    """An empty folder under the system temp dir, removed afterwards with any cluster still in it.

    Not pytest's tmp_path: under root the cluster runs as the `postgres` account, which cannot
    enter pytest's private (0700) base folder.
    """
    require_postgres()
    root = Path(tempfile.mkdtemp(prefix="batchrec-test-pg-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        for data in root.glob("**/PG_VERSION"):  # a test that failed half-way may leave one running
            cluster = LocalPostgres(data.parent.parent)
            if cluster.data_dir == data.parent:
                cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
