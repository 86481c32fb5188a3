"""The ASGI entry of every HTTP request, in front of the fast path and FastAPI: metrics, the drain,
CORS and API keys. Pure ASGI (no Starlette middleware stack) because it runs for every request,
including the fast path's.

Order, outermost first: metrics (every answer is counted, refusals too) -> CORS (a preflight is
answered without a key, and 401/429 answers carry the CORS headers the extension needs to read
them) -> API key and rate limit -> the app.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.middleware.cors import CORSMiddleware

from batchrec_dagster.serving.api.access import OPEN_PATHS, AccessPolicy
from batchrec_dagster.serving.api.metrics import ServingMetrics
from batchrec_dagster.serving.api.schemas import problem

ASGIApp = Callable[[dict, Any, Any], Awaitable[None]]

# metrics label per path: a fixed set, so that clients cannot create series at will
ROUTES = frozenset({"/recommendations", "/model", "/healthz", "/readyz", "/metrics", "/", "/docs",
                    "/openapi.json", "/page/compare", "/page/history"})
USER_ROUTE = "/users/{login}/recommendations"
_CLOSE = (b"connection", b"close")


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith("/users/") and path.endswith("/recommendations"):
        return USER_ROUTE
    return "other"


class ShutdownState:
    """Set on SIGTERM (shutdown.py): /readyz answers 503, and every response asks the client to
    close its connection, so that keep-alive clients move to another server during the drain."""

    def __init__(self) -> None:
        self.draining = False
        self.since: float | None = None

    def begin(self) -> None:
        self.since = time.monotonic()
        self.draining = True


async def send_problem(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = problem(detail)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class KeyGate:
    """API key and per-key rate limit for every path but the open ones (OPEN_PATHS)."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy, metrics: ServingMetrics | None):
        self.app = app
        self.policy = policy
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = self.policy.key_name(scope["headers"])
        if key is None:
            self._refused("no_key")
            await send_problem(send, 401, "this server needs an API key in the X-API-Key header",
                               [(b"www-authenticate", b'ApiKey header="X-API-Key"')])
            return
        retry_after = self.policy.retry_after(key)
        if retry_after is not None:
            self._refused("rate_limited")
            await send_problem(send, 429, f"rate limit of key {key!r} exceeded "
                               f"({self.policy.rate:g} requests per second); retry after {retry_after} s",
                               [(b"retry-after", str(retry_after).encode())])
            return
        await self.app(scope, receive, send)

    def _refused(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.observe_refused(reason)


class Edge:
    """Wraps `app` (the fast path + FastAPI) for HTTP requests; see the module docstring."""

    def __init__(self, app: ASGIApp, *, metrics: ServingMetrics | None, shutdown: ShutdownState,
                 access: AccessPolicy | None = None, cors_origins: list[str] | None = None):
        inner = app
        if access is not None and access.required:
            inner = KeyGate(inner, access, metrics)
        if cors_origins:
            inner = CORSMiddleware(inner, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                                   allow_headers=["content-type", "x-api-key", "authorization"],
                                   expose_headers=["retry-after"], max_age=600)
        self.inner = inner
        self.metrics = metrics
        self.shutdown = shutdown

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        status = 500  # what the client saw if the app fails before answering
        recorded = False
        draining = self.shutdown.draining
        metrics = self.metrics

        async def send_and_record(message: dict) -> None:
            nonlocal status, recorded
            if message["type"] == "http.response.start":
                status = message["status"]
                if draining:
                    message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            elif not message.get("more_body", False) and metrics is not None:
                # counted before the last byte leaves: a client that has its answer finds it counted
                metrics.observe_request(route_label(scope["path"]), status, time.perf_counter() - started)
                recorded = True
            await send(message)

        try:
            await self.inner(scope, receive, send_and_record)
        finally:
            if not recorded and metrics is not None:
                metrics.observe_request(route_label(scope["path"]), status, time.perf_counter() - started)
