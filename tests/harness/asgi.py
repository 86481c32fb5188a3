"""The in-process client of the route tests: Starlette's TestClient runs the ASGI app (and its
lifespan) on an event loop of its own, behind an httpx.Client.

Starlette warns, on import, that its TestClient will move from httpx to httpx2; the project uses
httpx, so that notice is silenced here, once, rather than shown in every run of the suite.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

__all__ = ["TestClient", "in_process"]


def in_process(app: object) -> TestClient:
    """A client calling `app` in-process; use it as a context manager (the lifespan runs inside).
    A server error is a 500 answer, as over HTTP, not an exception raised in the test."""
    return TestClient(app, raise_server_exceptions=False)
