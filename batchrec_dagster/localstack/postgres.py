"""A PostgreSQL cluster of our own in a folder, for `batchrec prod-stack` and the tests.

`initdb` once (user `dagster`, a generated password, scram-sha-256), then `pg_ctl start` on
127.0.0.1 and a free port, with Unix sockets off (their path length and directory permissions
vary between machines; TCP on loopback works everywhere). The Dagster processes reach it through
the same DAGSTER_PG_* variables that deploy/dagster.yaml reads in production. The database is
created over the wire (psycopg2, which dagster-postgres installs): no password in a child's
environment or command line.

PostgreSQL refuses to run as root. Under root the cluster runs as the unprivileged `postgres`
system account (the Debian package creates it); the folder is handed to that account and must
be reachable by it (every parent directory searchable by others).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import psycopg2
from psycopg2 import sql

from batchrec_dagster.localstack.processes import ProcessStopError, is_running, stop_process

DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
SERVICE_ACCOUNT = "postgres"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class PostgresError(RuntimeError):
    """The local cluster could not be created, started or stopped."""


@dataclass(frozen=True)
class PostgresConnection:
    host: str
    port: int
    username: str
    password: str
    database: str

    def dagster_env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads (the names the Dagster Helm chart uses too)."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_USERNAME": self.username, "DAGSTER_PG_PASSWORD": self.password,
                "DAGSTER_PG_DB": self.database}

    def url(self) -> str:
        return (f"postgresql://{quote(self.username, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{quote(self.database, safe='')}")

    @classmethod
    def from_url(cls, url: str) -> PostgresConnection:
        """`postgresql://user:password@host:port/database` (port 5432 when left out)."""
        parts = urlsplit(url)
        database = unquote(parts.path.lstrip("/"))
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.username \
                or not database:
            raise PostgresError("a PostgreSQL DSN looks like postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
        return cls(host=parts.hostname, port=parts.port or 5432, username=unquote(parts.username),
                   password=unquote(parts.password or ""), database=database)


def find_pg_bin(configured: Path | None = None) -> Path | None:
    """The folder holding initdb and pg_ctl: `configured` when given (and only it), else
    PostgreSQL 15's Debian location, else the one of `initdb` on PATH."""
    if configured is not None:
        candidates = [Path(configured)]
    else:
        on_path = shutil.which("initdb")
        candidates = [DEFAULT_PG_BIN, *([Path(on_path).parent] if on_path else [])]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


class LocalPostgres:
    """The cluster under `root`: `root/data` (PGDATA), `root/postgres.log`, `root/password`."""

    def __init__(self, root: Path, bin_dir: Path | None = None, username: str = "dagster",
                 database: str = "dagster"):
        found = find_pg_bin(bin_dir)
        if found is None:
            where = bin_dir or f"{DEFAULT_PG_BIN} or on PATH"
            raise PostgresError(f"PostgreSQL binaries (initdb, pg_ctl) not found in {where}: install "
                                f"PostgreSQL 15, or give their folder (--pg-bin), or the DSN of a running "
                                f"server (--postgres-dsn)")
        self.bin_dir = found
        self.root = Path(root).resolve()
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        for name in (username, database):
            if not _IDENTIFIER.fullmatch(name):
                raise PostgresError(f"{name!r} is not a plain SQL identifier")
        self.username = username
        self.database = database
        self._account = pwd.getpwnam(SERVICE_ACCOUNT) if os.geteuid() == 0 else None
        self.connection: PostgresConnection | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, port: int) -> PostgresConnection:
        """Create the cluster on first use, start it on 127.0.0.1:`port`, create the database."""
        if self.postmaster_pid() is not None:
            raise PostgresError(f"a server already runs from {self.data_dir} (pid {self.postmaster_pid()})")
        self._prepare_root()
        password_file = self.root / "password"
        if not (self.data_dir / "PG_VERSION").exists():
            password_file.write_text(secrets.token_urlsafe(24))
            password_file.chmod(0o600)
            self._hand_over(password_file)
            self._run("initdb", "-D", str(self.data_dir), "-U", self.username, f"--pwfile={password_file}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions")
        password = password_file.read_text().strip()
        # one -o string: the server's options; '' turns the Unix socket off
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                  "-w", "-t", "60", "start")
        self.connection = PostgresConnection("127.0.0.1", port, self.username, password, self.database)
        self.create_database(self.database)
        return self.connection

    def stop(self, timeout_s: float = 30.0) -> None:
        """`pg_ctl stop -m fast`, then make sure the postmaster is gone (SIGKILL as a last resort)."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(timeout_s)),
                      "stop")
        except PostgresError:
            pass  # escalated below
        try:  # pg_ctl waited for it; what is still there now gets SIGKILL
            stop_process(pid, grace_s=5, first_signal=signal.SIGKILL)
        except ProcessStopError as exc:
            raise PostgresError(f"PostgreSQL (pid {pid}) outlived SIGKILL") from exc

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid (first line of postmaster.pid), None when none runs."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if is_running(pid) else None

    # ------------------------------------------------------------------ helpers

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._account is None:
            return
        for parent in self.root.parents:  # the service account must be able to reach the folder
            if not parent.stat().st_mode & 0o001:
                raise PostgresError(f"running as root, PostgreSQL runs as '{SERVICE_ACCOUNT}', which cannot "
                                    f"enter {parent}; put the cluster elsewhere (e.g. under /tmp)")
        self._hand_over(self.root)
        if self.log_file.exists():
            self._hand_over(self.log_file)

    def _hand_over(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _run(self, tool: str, *args: str) -> str:
        account = self._account
        result = subprocess.run(
            [str(self.bin_dir / tool), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
            cwd=self.root, user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            # the postmaster that pg_ctl leaves running must not share our session: a Ctrl-C in
            # the terminal would reach it before we stop it in order
            start_new_session=True, timeout=120)
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise PostgresError(f"{tool} {' '.join(args[:1])} failed ({result.returncode}): "
                                f"{result.stderr.strip() or result.stdout.strip()}\n{log}")
        return result.stdout

    def create_database(self, name: str) -> PostgresConnection:
        """Create database `name` in the running cluster unless it exists; its connection."""
        if self.connection is None:
            raise PostgresError("the cluster is not started")
        if not _IDENTIFIER.fullmatch(name):
            raise PostgresError(f"{name!r} is not a plain SQL identifier")
        admin = PostgresConnection(**{**self.connection.__dict__, "database": "postgres"})
        conn = psycopg2.connect(admin.url())
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg2.Error as exc:
            raise PostgresError(f"could not create database {name}: {exc}") from exc
        finally:
            conn.close()
        return PostgresConnection(**{**self.connection.__dict__, "database": name})
