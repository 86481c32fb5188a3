"""`batchrec prod-stack`: Dagster in its production shape on one machine.

Separate long-lived processes, as on Kubernetes: PostgreSQL (a local cluster in a folder, or any
server given by DSN) holds runs, event logs and schedules (deploy/dagster.yaml); the code location
is its own gRPC server (`dagster code-server start`); `dagster-webserver` and `dagster-daemon run`
load it through deploy/workspace-grpc.yaml. This process supervises them like a Deployment: a
service that dies is restarted (a bounded number of times). Ctrl-C or SIGTERM stops the daemon
first (no new runs), cancels the runs in progress through the webserver (queued runs stay queued
for the next start), then stops the webserver, the code server and the local PostgreSQL, each by
PID with its process group, and checks that they are gone.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from batchrec_dagster.localstack.postgres import LocalPostgres, PostgresConnection, PostgresError
from batchrec_dagster.localstack.process_groups import stop_process_groups
from batchrec_dagster.localstack.processes import handling
from batchrec_dagster.localstack.webserver_client import WebserverClient, WebserverError
from batchrec_dagster.settings import PROJECT_ROOT, SettingsError, get_settings, override_for_process

INSTANCE_YAML = PROJECT_ROOT / "deploy" / "dagster.yaml"
WORKSPACE_YAML = PROJECT_ROOT / "deploy" / "workspace-grpc.yaml"
LOCATION = "batchrec"
SERVICES = ("code-server", "webserver", "daemon")


class StackError(RuntimeError):
    """The stack could not be started or kept running."""


class ProductionStack:
    """The processes of one stack under `home` (logs in home/logs, state in home/state.json)."""

    def __init__(self, home: Path, *, host: str = "127.0.0.1", port: int = 3000, code_server_port: int = 0,
                 postgres_dsn: str | None = None, postgres_dir: Path | None = None, postgres_port: int = 0,
                 pg_bin: Path | None = None, max_restarts: int = 5):
        self.home = Path(home).resolve()
        self.host, self.port = host, port
        self.code_server_port = code_server_port or _free_port(host)
        self.url = f"http://{host}:{port}"
        self.webserver = WebserverClient(self.url)
        self.max_restarts = max_restarts
        self.postgres_dsn = postgres_dsn
        self.postgres = None if postgres_dsn else \
            LocalPostgres(postgres_dir or self.home / "postgres", pg_bin)
        self.postgres_port = postgres_port
        self.processes: dict[str, subprocess.Popen] = {}
        self.restarts = dict.fromkeys(SERVICES, 0)
        self.location_reloads = 0  # times the webserver reloaded the location after a code-server restart
        self._reload_pending = False
        self.stop_requested = threading.Event()
        self.dagster_home = self.home / "dagster_home"
        self._lock: Any = None
        self._started_postgres = False  # stop only what this stack started

    # ------------------------------------------------------------------ start

    def start(self, ready_timeout_s: float = 300.0) -> None:
        """PostgreSQL, schema migration, then the three services; returns once Dagit sees the code
        location loaded and the daemons healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        lock = open(self.home / "prod-stack.lock", "w")  # noqa: SIM115 - held while we run
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StackError(f"another prod-stack runs from {self.home}") from None
        self._lock = lock
        if self.postgres is not None:
            connection = self.postgres.start(self.postgres_port or _free_port("127.0.0.1"))
            self._started_postgres = True
        else:
            connection = PostgresConnection.from_url(self.postgres_dsn or "")
        self.dagster_home.mkdir(exist_ok=True)
        shutil.copyfile(INSTANCE_YAML, self.dagster_home / "dagster.yaml")
        # for this process and, inherited, every service: what deploy/dagster.yaml and
        # deploy/workspace-grpc.yaml read
        override_for_process(**connection.dagster_env(), DAGSTER_HOME=str(self.dagster_home),
                             BATCHREC_CODE_SERVER_HOST=self.host,
                             BATCHREC_CODE_SERVER_PORT=str(self.code_server_port), PYTHONUNBUFFERED="1")
        # creates the schema on a new database, upgrades it after a Dagster upgrade; once, before
        # the services, which would otherwise race to create the same tables
        migrate = subprocess.run([_tool("dagster"), "instance", "migrate"], cwd=PROJECT_ROOT,
                                 capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
        if migrate.returncode != 0:
            raise StackError(f"dagster instance migrate failed:\n{migrate.stdout}\n{migrate.stderr}")
        for name in SERVICES:
            self.start_service(name)
        self.write_state(ready=False)
        self._wait_ready(ready_timeout_s)
        for pool, limit in self.webserver.configure_pools().items():
            print(f"pool {pool}: limit {limit} (the instance's default_limit)", flush=True)
        self.write_state(ready=True)

    def command(self, name: str) -> list[str]:
        workspace = ["-w", str(WORKSPACE_YAML)]
        return {
            "code-server": [_tool("dagster"), "code-server", "start",
                            "-m", "batchrec_dagster.defs.definitions", "--location-name", LOCATION,
                            "-h", self.host, "-p", str(self.code_server_port)],
            "webserver": [_tool("dagster-webserver"), "-h", self.host, "-p", str(self.port), *workspace],
            "daemon": [_tool("dagster-daemon"), "run", *workspace],
        }[name]

    def start_service(self, name: str) -> subprocess.Popen:
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            self.command(name), cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # own group: stopping it stops what it started (the code server's gRPC child and run
            # workers); own session: a Ctrl-C in the terminal reaches only this supervisor
            start_new_session=True)
        log.close()
        self.processes[name] = process
        print(f"{name}: pid {process.pid}", flush=True)
        return process

    def stop_service(self, name: str, timeout_s: float = 30.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stop_process_groups(process, timeout_s=timeout_s)

    # ------------------------------------------------------------------ run

    def supervise(self, poll_s: float = 1.0) -> None:
        """Restart services that exit, until a stop is requested; StackError after too many restarts."""
        while not self.stop_requested.wait(poll_s):
            if self.postgres is not None and self.postgres.postmaster_pid() is None:
                raise StackError(f"PostgreSQL stopped; see {self.postgres.log_file}")
            for name, process in list(self.processes.items()):
                if process.poll() is None:
                    continue
                self.restarts[name] += 1
                if self.restarts[name] > self.max_restarts:
                    raise StackError(f"{name} exited {self.restarts[name]} times (last code "
                                     f"{process.returncode}); see {self.home / 'logs' / name}.log")
                print(f"{name} exited with code {process.returncode}; restarting "
                      f"({self.restarts[name]}/{self.max_restarts})", flush=True)
                self.stop_service(name, timeout_s=5)  # what it left behind in its group
                self.start_service(name)
                self._reload_pending = self._reload_pending or name == "code-server"
                self.write_state(ready=True)
            if self._reload_pending and self.webserver.reload_location(LOCATION):
                self._reload_pending = False
                self.location_reloads += 1
                print("the webserver reloaded the code location from the restarted code server", flush=True)
                self.write_state(ready=True)

    def stop(self) -> None:
        """Daemon, runs in progress, webserver, code server, PostgreSQL; each checked gone. Goes on
        past a step that fails and reports every failure at the end."""
        self.stop_requested.set()
        errors = []
        for step in ("daemon", "runs", "webserver", "code-server", "postgres"):
            try:
                if step == "runs":  # nothing new is launched once the daemon is gone
                    if "webserver" in self.processes and "code-server" in self.processes:
                        canceled = self.webserver.cancel_runs_in_progress()
                        if canceled:
                            print(f"canceled runs in progress: {', '.join(canceled)}", flush=True)
                elif step == "postgres":
                    if self._started_postgres:
                        self.postgres.stop()
                        self._started_postgres = False
                else:
                    self.stop_service(step)
            except (OSError, RuntimeError) as exc:  # WebserverError, PostgresError: RuntimeErrors
                errors.append(f"{step}: {exc}")
        if self._lock is not None:  # None: another stack owns this home; its state is not ours
            self.write_state(ready=False, stopped=True)
            self._lock.close()
            self._lock = None
        if errors:
            raise StackError("; ".join(errors))

    def _ready(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise StackError(f"{name} exited with code {process.returncode} while starting; "
                                 f"see {self.home / 'logs' / name}.log")
        return self.webserver.ready(LOCATION)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.stop_requested.is_set():
                raise StackError("stopped while starting")
            if time.monotonic() > deadline:
                raise StackError(f"not ready after {timeout_s:.0f}s; see the logs in {self.home / 'logs'}")
            time.sleep(1)  # poll interval

    def write_state(self, ready: bool, stopped: bool = False) -> None:
        """home/state.json: what runs where, for people and scripts (replaced atomically)."""
        state = {
            "supervisor_pid": os.getpid(), "ready": ready, "stopped": stopped, "webserver": self.url,
            "dagster_home": str(self.dagster_home),
            "code_server": f"{self.host}:{self.code_server_port}",
            "services": {name: {"pid": p.pid, "restarts": self.restarts[name]}
                         for name, p in self.processes.items()},
            "location_reloads": self.location_reloads,
            "postgres": {"pid": self.postgres.postmaster_pid(), "root": str(self.postgres.root),
                         "port": self.postgres.connection.port if self.postgres.connection else None}
            if self.postgres is not None else {"external": True},
        }
        tmp = self.home / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.home / "state.json")


def _tool(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else shutil.which(name) or name


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- command line


def add_prod_stack_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "prod-stack", help="run Dagster as in production: PostgreSQL, code server, webserver, daemon",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="state, logs, DAGSTER_HOME and the local PostgreSQL "
                                                  "(default: <BATCHREC_HOME>/prod_stack)")
    parser.add_argument("--host", default="127.0.0.1", help="interface of the webserver and code server")
    parser.add_argument("-p", "--port", type=int, default=3000, help="webserver port (default: %(default)s)")
    parser.add_argument("--code-server-port", type=int, default=0, help="gRPC port (default: a free one)")
    parser.add_argument("--postgres-dsn", help="postgresql://USER:PASSWORD@HOST:PORT/DB of a running "
                        "server instead of a local cluster (default: BATCHREC_PROD_STACK_PG_DSN)")
    parser.add_argument("--pg-bin", type=Path, help="folder of initdb and pg_ctl (default: BATCHREC_PG_BIN, "
                        "else /usr/lib/postgresql/15/bin, else initdb on PATH)")
    parser.add_argument("--postgres-dir", type=Path, help="local cluster folder (default: HOME/postgres)")
    parser.add_argument("--postgres-port", type=int, default=0, help="local cluster port (default: free)")
    parser.add_argument("--max-restarts", type=int, default=5, help="restarts of a service before giving up")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait until ready")
    parser.set_defaults(func=run_prod_stack)
    return parser


def run_prod_stack(args: argparse.Namespace) -> int:
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"batchrec prod-stack: {exc}", file=sys.stderr)
        return 1
    try:
        stack = ProductionStack(args.home or settings.home / "prod_stack", host=args.host, port=args.port,
                                code_server_port=args.code_server_port,
                                postgres_dsn=args.postgres_dsn or settings.prod_stack_pg_dsn,
                                postgres_dir=args.postgres_dir, postgres_port=args.postgres_port,
                                pg_bin=args.pg_bin or settings.pg_bin, max_restarts=args.max_restarts)
    except PostgresError as exc:  # no PostgreSQL binaries and no DSN
        print(f"batchrec prod-stack: {exc}", file=sys.stderr)
        return 1
    if not settings.mongodb_uri:
        from batchrec_dagster.deployments import server_uri

        # the embedded server (local deployment), shared with the other local commands like
        # `batchrec dev`; `batchrec stop` stops it. The services inherit its address.
        uri = server_uri(settings)
        override_for_process(MONGODB_URI=uri)
        print(f"embedded MongoDB at {uri} (`batchrec stop` stops it)", flush=True)
    # our handlers (not SIG_IGN, which a shell gives to `cmd &`) are what the children start with:
    # exec resets handled signals to their defaults, so SIGTERM reaches the Dagster processes
    with handling(dict.fromkeys((signal.SIGINT, signal.SIGTERM), lambda *_: stack.stop_requested.set())):
        return _run(stack, args.ready_timeout)


def _run(stack: ProductionStack, ready_timeout_s: float) -> int:
    code = 0
    stopped_cleanly = False
    try:
        stack.start(ready_timeout_s=ready_timeout_s)
        print(f"ready: Dagit at {stack.url} (PostgreSQL storage, code server on "
              f"{stack.host}:{stack.code_server_port}); Ctrl-C stops everything", flush=True)
        stack.supervise()
    except (StackError, PostgresError, WebserverError, OSError) as exc:
        print(f"batchrec prod-stack: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        print("stopping ...", flush=True)
        try:
            stack.stop()
            stopped_cleanly = True
        except (StackError, PostgresError, RuntimeError) as exc:
            print(f"batchrec prod-stack: while stopping: {exc}", file=sys.stderr, flush=True)
            code = 1
    if stopped_cleanly:
        print("stopped: every process of the stack is gone", flush=True)
    return code
