"""`POST /recommendations` as a small pure-ASGI handler, and request bodies read within limits.

FastAPI's per-request machinery (its middleware stack, routing, Request objects, dependency
solving) costs more than the model at 5,000 items; `RecommendationFastPath` runs the same
`RecommendationService.by_ids` with none of it. `ServingApp.__call__` hands it the request
before Starlette's middleware stack runs. The FastAPI route of the same path is the documented
one (and serves the path when the fast path is switched off); tests check both answer alike.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from batchrec_dagster.serving.api.schemas import BadRequest, problem
from batchrec_dagster.serving.api.service import RecommendationService

JSON_HEADERS = [(b"content-type", b"application/json")]


class Disconnected(Exception):
    """The client went away before its request body arrived."""


def check_length(declared: str | bytes | None, limit: int) -> None:
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadRequest(400, "invalid Content-Length header") from None
    if length > limit:
        raise BadRequest(413, f"request body is larger than {limit} bytes")


async def read_request_body(request: Request, limit: int) -> bytes:
    """A FastAPI request's body, refused with 413 as soon as it exceeds `limit`."""
    check_length(request.headers.get("content-length"), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body is larger than {limit} bytes")
    return bytes(body)


class RecommendationFastPath:
    """Pure-ASGI handling of `POST /recommendations`, ahead of FastAPI and all its middleware."""

    def __init__(self, service: RecommendationService):
        self.service = service

    @staticmethod
    def handles(scope: dict) -> bool:
        return scope["path"] == "/recommendations" and scope["method"] == "POST"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            body = await self._read_body(scope, receive)
            status, payload = await self.service.by_ids(body)
        except BadRequest as exc:
            status, payload = exc.status, problem(exc.detail)
        except Disconnected:
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": JSON_HEADERS + [(b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope: dict, receive: Any) -> bytes:
        limit = self.service.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                check_length(value, limit)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        body = message.get("body", b"")
        if len(body) > limit:
            raise BadRequest(413, f"request body is larger than {limit} bytes")
        if not message.get("more_body", False):
            return body  # the common case: the whole body in one message
        chunks: list[bytes] = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # chunked uploads are counted as they arrive
                raise BadRequest(413, f"request body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
