"""The local PostgreSQL cluster that `batchrec prod-stack` and the production tests start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg2
import pytest

from batchrec_dagster.localstack.postgres import LocalPostgres, PostgresConnection, PostgresError
from batchrec_dagster.localstack.processes import is_running
from tests.harness.servers import free_port


def test_cluster_starts_stops_and_keeps_its_data(pg_root: Path) -> None:
    cluster = LocalPostgres(pg_root / "pg")
    connection = cluster.start(free_port())
    pid = cluster.postmaster_pid()
    assert pid is not None and is_running(pid)
    password_file = pg_root / "pg" / "password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    with psycopg2.connect(connection.url()) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), current_user, inet_server_addr()::text")
        assert cur.fetchone() == ("dagster", "dagster", "127.0.0.1/32")
        cur.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
    conn.close()
    # password authentication is on: the generated password is required
    wrong = PostgresConnection(**{**connection.__dict__, "password": "not-it"})
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(wrong.url())
    with pytest.raises(PostgresError, match="already runs"):
        cluster.start(free_port())

    cluster.stop()
    assert not is_running(pid) and cluster.postmaster_pid() is None

    # a restart (another port) finds the data and the password of the first start
    again = cluster.start(free_port())
    assert again.password == connection.password and again.port != connection.port
    with psycopg2.connect(again.url()) as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM kept")
        assert cur.fetchall() == [(42,)]
    conn.close()
    second = cluster.create_database("other_db")
    assert second.database == "other_db" and second.port == again.port
    with psycopg2.connect(second.url()) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database()")
        assert cur.fetchone() == ("other_db",)
    conn.close()
    new_pid = cluster.postmaster_pid()
    cluster.stop()
    assert new_pid is not None and not is_running(new_pid)


def test_connection_from_a_dsn_and_to_the_dagster_variables() -> None:
    connection = PostgresConnection.from_url("postgresql://dag%40ster:p%3Ass@db.internal:6432/dagster")
    assert connection == PostgresConnection("db.internal", 6432, "dag@ster", "p:ss", "dagster")
    assert PostgresConnection.from_url(connection.url()) == connection
    assert connection.dagster_env() == {
        "DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "6432", "DAGSTER_PG_USERNAME": "dag@ster",
        "DAGSTER_PG_PASSWORD": "p:ss", "DAGSTER_PG_DB": "dagster"}
    assert PostgresConnection.from_url("postgres://u@h/d").port == 5432
    for bad in ("mysql://u:p@h/d", "postgresql://h:5432/d", "postgresql://u:p@h:5432/"):
        with pytest.raises(PostgresError, match="postgresql://USER:PASSWORD@HOST:PORT/DATABASE"):
            PostgresConnection.from_url(bad)


def test_missing_binaries_and_bad_names_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PostgresError, match="binaries .* not found in .*no-postgres-here.*--pg-bin"):
        LocalPostgres(tmp_path / "pg", bin_dir=tmp_path / "no-postgres-here")
    for name in ("initdb", "pg_ctl"):
        (tmp_path / name).touch()
    with pytest.raises(PostgresError, match="not a plain SQL identifier"):
        LocalPostgres(tmp_path / "pg", bin_dir=tmp_path, database="x'; DROP TABLE runs; --")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to the postgres account")
def test_root_refuses_a_folder_the_postgres_account_cannot_reach(pg_root: Path) -> None:
    private = pg_root / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(PostgresError, match="cannot enter .*private"):
        LocalPostgres(private / "pg").start(free_port())
