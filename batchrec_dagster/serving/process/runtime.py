"""One server process: the app for the deployment in the environment, served by uvicorn with the
drain on SIGTERM. `batchrec serve` runs it in-process (one worker) or in each worker process."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrec_dagster.deployments import blob_store_for, server_uri
from batchrec_dagster.registry.defaults import MAX_MODEL_AGE_HOURS
from batchrec_dagster.settings import get_settings
from batchrec_dagster.sources.mongo import connect

if TYPE_CHECKING:
    import uvicorn

    from batchrec_dagster.serving.api.app import ServingApp

SWITCH_INTERVAL_S = 0.001
MONGO_TIMEOUT_MS = 2000  # server selection and connecting: a login look-up fails fast when MongoDB is down
# a reply that never comes (a frozen server, a dead peer behind an open socket): without it the
# poller's registry queries could wait forever (login look-ups have their own 2 s budget, service.py)
MONGO_SOCKET_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class ServeOptions:
    """What `batchrec serve` was told, passed to each worker process as JSON."""

    host: str = "127.0.0.1"
    port: int = 8000
    poll_seconds: float = 60.0
    max_age_hours: float = MAX_MODEL_AGE_HOURS
    torch_threads: int = 1
    inference: str = "batched"
    max_batch: int = 32
    log_level: str = "info"
    drain_seconds: float = 5.0
    workers: int = 1
    state_dir: str = ""  # shared by the workers: metrics files (metrics/) and rate-limit buckets

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeOptions:
        return cls(**json.loads(text))


def build_app(options: ServeOptions, worker_index: int = 0) -> ServingApp:
    """The API for the deployment in the environment (settings.py), as this worker runs it.
    Imports late: prometheus_client must see PROMETHEUS_MULTIPROC_DIR, set by the command."""
    import torch

    from batchrec_dagster.serving.api.access import AccessPolicy
    from batchrec_dagster.serving.api.app import WorkerInfo, create_app
    from batchrec_dagster.serving.api.metrics import ServingMetrics
    from batchrec_dagster.serving.model.ann_index import AnnOptions
    from batchrec_dagster.serving.model.local_copies import LocalCopies
    from batchrec_dagster.serving.model.manager import ModelManager

    torch.set_num_threads(options.torch_threads)
    # the inference thread waits up to one switch interval for the interpreter lock whenever the
    # event loop holds it (default 5 ms); 1 ms bounds that wait at a negligible cost in switches
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    settings = get_settings()
    db = connect(server_uri(settings), serverSelectionTimeoutMS=MONGO_TIMEOUT_MS,
                 connectTimeoutMS=MONGO_TIMEOUT_MS,
                 socketTimeoutMS=MONGO_SOCKET_TIMEOUT_MS)[settings.mongodb_database]
    state = Path(options.state_dir)
    policy = settings.selection_policy(options.max_age_hours)  # `serve --max-age-hours`, else the setting
    manager = ModelManager(db, blob_store_for(settings), policy=policy,
                           poll_seconds=options.poll_seconds, load_challenger=settings.serve_challenger,
                           ann=AnnOptions.from_settings(settings, threads=options.torch_threads),
                           copies=LocalCopies(settings.serve_cache_dir))
    access = AccessPolicy(settings.api_key_hashes, settings.api_rate_limit, settings.api_rate_burst,
                          buckets_path=state / "ratelimit")
    return create_app(manager, db, inference=options.inference, max_batch=options.max_batch,
                      metrics=ServingMetrics(state / "metrics"), access=access,
                      cors_origins=settings.cors_origin_list,
                      worker=WorkerInfo(worker_index, options.workers))


def uvicorn_config(app: Any, *, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """How every server of the API runs uvicorn (`batchrec serve`, and the tests' servers)."""
    import uvicorn

    from batchrec_dagster.serving.http.protocol import KEEP_ALIVE_S, HeadWithBodyProtocol
    from batchrec_dagster.serving.http.shutdown import GRACEFUL_TIMEOUT_S

    return uvicorn.Config(app, host=host, port=port, access_log=False, log_level=log_level,
                          loop="auto", http=HeadWithBodyProtocol, lifespan="on",
                          timeout_keep_alive=int(KEEP_ALIVE_S),
                          timeout_graceful_shutdown=GRACEFUL_TIMEOUT_S,
                          proxy_headers=False)  # no client address is used: skip the X-Forwarded-* layer


def serve(options: ServeOptions, worker_index: int = 0, sockets: list[socket.socket] | None = None) -> None:
    """Serve until a signal ends the drain (shutdown.py); binds host:port unless given `sockets`."""
    from batchrec_dagster.serving.http.shutdown import DrainingServer

    app = build_app(options, worker_index)
    config = uvicorn_config(app, host=options.host, port=options.port, log_level=options.log_level)
    server = DrainingServer(config, drain_seconds=options.drain_seconds, state=app.state.shutdown,
                            on_drain=app.state.metrics.begin_draining)
    server.run(sockets=sockets)


def exit_now(code: int) -> None:
    """End the process once the orderly shutdown is complete (listener closed, requests answered,
    poller and inference thread stopped, files removed), skipping the interpreter's teardown: its
    garbage collection of the model and torch objects took 2.5-3.5 s more on the shared 2-core
    machine, which a rollout (and Kubernetes' grace period) would wait on for nothing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
