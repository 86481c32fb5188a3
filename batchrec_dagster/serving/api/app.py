"""The recommendation API (FastAPI): the routes, and the ASGI entry that puts the fast path ahead
of FastAPI's stack.

Each worker process holds its own model and poller (`serving/model/manager.py`); `batchrec serve
--workers N` runs N of these apps on one port (`serving/process/supervisor.py`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pymongo.database import Database

from batchrec_dagster import __version__
from batchrec_dagster.serving.api.access import AccessPolicy
from batchrec_dagster.serving.api.docs_ui import add_docs_routes
from batchrec_dagster.serving.api.metrics import CONTENT_TYPE, ServingMetrics
from batchrec_dagster.serving.api.page import add_page_routes
from batchrec_dagster.serving.api.schemas import (
    DEFAULT_K,
    MAX_BODY_BYTES,
    MAX_K,
    MAX_LOGIN_LENGTH,
    BadRequest,
    Problem,
    RecommendationRequest,
    RecommendationResponse,
    json_response,
    problem,
    to_json,
)
from batchrec_dagster.serving.api.service import RecommendationService
from batchrec_dagster.serving.api.status import manager_status
from batchrec_dagster.serving.http.edge import Edge, ShutdownState
from batchrec_dagster.serving.http.fast_path import RecommendationFastPath, read_request_body
from batchrec_dagster.serving.model.inference import Inference, make_inference
from batchrec_dagster.serving.model.manager import ModelManager, RefreshResult


@dataclass(frozen=True)
class WorkerInfo:
    """Which worker process this app runs in (`/model` says which one answered)."""

    index: int = 0
    workers: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "index": self.index, "workers": self.workers}


class ServingApp(FastAPI):
    """FastAPI behind `edge` (metrics, drain, CORS, API keys; edge.py), with `POST
    /recommendations` answered by `fast_path` (when set) before FastAPI's middleware stack: the
    stack's layers cost about a tenth of the server's CPU per request."""

    fast_path: RecommendationFastPath | None = None
    edge: Edge | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # type: ignore[override]
        edge = self.edge
        if edge is not None and scope["type"] == "http":
            await edge(scope, receive, send)
        else:
            await self.dispatch(scope, receive, send)

    async def dispatch(self, scope: dict, receive: Any, send: Any) -> None:
        fast_path = self.fast_path
        if fast_path is not None and scope["type"] == "http" and fast_path.handles(scope):
            await fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(manager: ModelManager, db: Database | None = None, *, inference: str = "batched",
               max_batch: int = 32, max_body_bytes: int = MAX_BODY_BYTES,
               manage_lifecycle: bool = True, fast_path: bool = True,
               metrics: ServingMetrics | None = None, access: AccessPolicy | None = None,
               cors_origins: list[str] | None = None, worker: WorkerInfo | None = None) -> ServingApp:
    """The API around a model manager. `db` (users, stars, repositories, models) serves the
    by-login route and the page.

    With `manage_lifecycle`, the app's lifespan starts and stops the manager's poller. With
    `fast_path`, `POST /recommendations` is answered by `RecommendationFastPath`. `metrics`
    (default: a registry of this app's own), `access` (API keys) and `cors_origins` configure the
    edge; `app.state.shutdown` is the drain flag that `serving.http.shutdown.DrainingServer` sets.
    """
    metrics = metrics if metrics is not None else ServingMetrics()
    worker = worker or WorkerInfo()
    shutdown = ShutdownState()
    engine: Inference = make_inference(inference, max_batch)
    engine.on_batch = metrics.observe_batch
    service = RecommendationService(manager, db, engine, max_body_bytes)
    previous_hook = manager.on_refresh

    def on_refresh(mgr: ModelManager, result: RefreshResult) -> None:
        metrics.observe_refresh(mgr, result)
        if previous_hook is not None:
            previous_hook(mgr, result)

    manager.on_refresh = on_refresh

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        if manage_lifecycle:
            manager.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await run_in_threadpool(manager.stop)
            engine.stop()

    app = ServingApp(
        title="batchrec recommendations",
        version=__version__,
        description=("Recommends GitHub repositories from the ones a user starred, with the best "
                     "model in the batchrec registry (swapped in without downtime)."),
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs: Swagger UI with local assets (docs_ui.py); no ReDoc
    )
    app.state.manager = manager
    app.state.inference = engine
    app.state.service = service
    app.state.metrics = metrics
    app.state.shutdown = shutdown
    if fast_path:
        app.fast_path = RecommendationFastPath(service)
    app.edge = Edge(app.dispatch, metrics=metrics, shutdown=shutdown, access=access,
                    cors_origins=cors_origins)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return json_response(exc.status, problem(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # JSON like every other answer (Starlette's default is a plain-text 500); logged by Starlette
        return json_response(500, problem(f"internal error: {type(exc).__name__}"))

    responses = {503: {"model": Problem, "description": "No model loaded yet"},
                 422: {"model": Problem, "description": "Invalid input"}}

    @app.post("/recommendations", response_model=RecommendationResponse,
              responses={**responses, 413: {"model": Problem, "description": "Body too large"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": RecommendationRequest.model_json_schema()}}}})
    async def post_recommendations(request: Request) -> Response:
        """Top-k repositories for a user given as the repositories they starred (fold-in).

        Repository ids the model does not know are ignored and listed; with none known, the
        ranking is by popularity (`popularity_fallback`). The user's own repositories are never
        recommended."""
        return json_response(*await service.by_ids(await read_request_body(request, max_body_bytes)))

    @app.get("/users/{login}/recommendations", response_model=RecommendationResponse,
             responses={**responses, 404: {"model": Problem, "description": "Unknown login"}})
    async def user_recommendations(
        login: Annotated[str, Path(min_length=1, max_length=MAX_LOGIN_LENGTH)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = DEFAULT_K,
    ) -> Response:
        """Top-k repositories for a user in MongoDB, from the repositories they starred.
        503 (JSON) when MongoDB does not answer."""
        return json_response(*await service.by_login(login, k))

    @app.get("/model")
    async def model_status() -> Response:
        """The served model, its registry entry, when it was loaded and the last swap error."""
        return json_response(200, to_json({**manager_status(manager), "worker": worker.to_json(),
                                            "draining": shutdown.draining, "inference": engine.stats()}))

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus metrics, summed over the worker processes (docs/serving.md, Metrics)."""
        metrics.observe_model(manager.current, manager.now().timestamp())  # this worker's age, now
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return json_response(200, b'{"status":"ok"}')

    @app.get("/readyz", responses={503: {"model": Problem}})
    async def readyz() -> Response:
        """Readiness: 200 once a model is loaded, 503 before, and 503 from the moment a shutdown
        signal arrives (drain)."""
        if shutdown.draining:
            return json_response(503, problem("shutting down"))
        model = manager.current
        if model is None:
            return json_response(*service.not_ready())
        return json_response(200, to_json({"ready": True, "model": model.summary}))

    add_page_routes(app, service, manager, db)
    add_docs_routes(app)
    return app
