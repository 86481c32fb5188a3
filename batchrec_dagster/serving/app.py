"""The recommendation API (FastAPI): recommendations by starred repositories or by user login.

Run it in ONE process (uvicorn workers=1): the model and its hot swap live in process memory.
Every request reads the served model once (`manager.current`) and uses that object to the end.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import repeat
from typing import Annotated, Any

import numpy as np
import pymongo
from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo.database import Database

from batchrec_dagster import __version__
from batchrec_dagster.github import MAX_ID, GitHubId, is_github_id
from batchrec_dagster.serving.inference import Inference, make_inference
from batchrec_dagster.serving.model_manager import LoadedModel, ModelManager

MAX_K = 1000
DEFAULT_K = 20
MAX_INPUT_IDS = 10_000
MAX_BODY_BYTES = 1 << 20           # 10,000 ids of 20 digits fit with room to spare
MAX_REPO_ID = MAX_ID               # ids are int64 in the model and in MongoDB (github.py)
MAX_LOGIN_LENGTH = 100

RepoId = GitHubId  # the pipeline's rule (github.is_github_id): the API serves what it trains on


class RecommendationRequest(BaseModel):
    """The repositories a user has starred. Strict: ids must be JSON integers, not strings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    repo_ids: list[RepoId] = Field(max_length=MAX_INPUT_IDS, description=(
        "Ids of the repositories the user has starred. Duplicates are ignored; ids the model does "
        "not know are ignored and listed in `unknown_repo_ids`."))
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="How many repositories to recommend.")


class Recommendation(BaseModel):
    repo_id: int
    name: str | None = Field(description="owner/name, null when the model has no name for it")
    score: float


class ModelSummary(BaseModel):
    id: str | None
    run_id: str | None
    partition_key: str | None
    score: float | None
    file_name: str | None


class RecommendationResponse(BaseModel):
    model: ModelSummary
    k: int
    recommendations: list[Recommendation]
    popularity_fallback: bool = Field(description=(
        "True when no input repository is known to the model: the ranking is by popularity."))
    unknown_repo_ids: list[int]
    duplicates_ignored: int
    login: str | None = None


class Problem(BaseModel):
    detail: Any


class BadRequest(Exception):
    def __init__(self, status: int, detail: Any):
        self.status = status
        self.detail = detail


def _json(content: Any) -> bytes:
    return json.dumps(content, separators=(",", ":")).encode()


def _columns(model: LoadedModel, repo_ids: list[int]) -> tuple[np.ndarray, list[int], int]:
    """The model's columns of the known ids (first occurrence order), the unknown ids, and how
    many duplicates were dropped."""
    unique = list(dict.fromkeys(repo_ids))
    if model.column_of is not None:  # dict lookups in C (map): cheaper than numpy for ~50 ids
        columns = np.fromiter(map(model.column_of.get, unique, repeat(-1, len(unique))),
                              dtype=np.int64, count=len(unique))
    else:
        columns = model.recommender.index_of(np.asarray(unique, dtype=np.int64))
    found = columns >= 0
    known = columns[found] if not found.all() else columns
    unknown = [] if known is columns else np.asarray(unique, dtype=object)[~found].tolist()
    return known, unknown, len(repo_ids) - len(unique)


def _check_length(declared: str | bytes | None, limit: int) -> None:
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadRequest(400, "invalid Content-Length header") from None
    if length > limit:
        raise BadRequest(413, f"request body is larger than {limit} bytes")


class RecommendationService:
    """The request logic, shared by the FastAPI routes and the ASGI fast path: bytes in, bytes out."""

    def __init__(self, manager: ModelManager, db: Database | None, engine: Inference,
                 max_body_bytes: int):
        self.manager = manager
        self.db = db
        self.engine = engine
        self.max_body_bytes = max_body_bytes

    def not_ready(self) -> tuple[int, bytes]:
        error = self.manager.last_error
        reason = "no model loaded yet"
        if error is not None:
            reason += f"; last load attempt failed: {error.message}"
        elif self.manager.last_outcome is not None and self.manager.last_outcome.outcome == "no_model":
            reason += "; the registry holds no fresh model"
        return 503, _json({"detail": reason})

    async def by_ids(self, body: bytes) -> tuple[int, bytes]:
        try:
            payload = RecommendationRequest.model_validate_json(body)
        except ValidationError as exc:
            # no input echo: it may be invalid UTF-8 or a megabyte long
            return 422, _json({"detail": exc.errors(include_url=False, include_context=False,
                                                    include_input=False)})
        model = self.manager.current  # read once: this request uses this model to the end
        if model is None:
            return self.not_ready()
        return 200, await self.recommend(model, payload.repo_ids, payload.k)

    async def by_login(self, login: str, k: int) -> tuple[int, bytes]:
        if self.db is None:
            return 404, _json({"detail": "this server has no user database"})
        model = self.manager.current
        if model is None:
            return self.not_ready()
        found = await run_in_threadpool(starred_repo_ids, self.db, login)
        if found is None:
            return 404, _json({"detail": f"no user with login {login!r}"})
        return 200, await self.recommend(model, found, k, login)

    async def recommend(self, model: LoadedModel, repo_ids: list[int], k: int,
                        login: str | None = None) -> bytes:
        known, unknown_ids, duplicates = _columns(model, repo_ids)
        indices, scores = await self.engine.recommend(model, known, k)
        keep = indices >= 0  # fewer candidates than k: padding
        indices, scores = indices[keep], scores[keep]
        # hand-assembled JSON from fragments encoded at load time (json.dumps of the whole body
        # costs more than the rest of the handler); same document as RecommendationResponse
        recs = ",".join(p + (repr(s) if math.isfinite(s) else "null") + "}"
                        for p, s in zip(model.json_prefix[indices].tolist(), scores.tolist(), strict=True))
        unknown = json.dumps(unknown_ids) if unknown_ids else "[]"
        login_part = f',"login":{json.dumps(login)}' if login is not None else ""
        return (f'{{"model":{model.summary_json},"k":{k},"recommendations":[{recs}],'
                f'"popularity_fallback":{"false" if known.size else "true"},'
                f'"unknown_repo_ids":{unknown},"duplicates_ignored":{duplicates}{login_part}}}').encode()


_JSON_HEADERS = [(b"content-type", b"application/json")]


class RecommendationFastPath:
    """Pure-ASGI handling of `POST /recommendations`, ahead of FastAPI and all its middleware.

    FastAPI's per-request machinery (its middleware stack, routing, Request objects, dependency
    solving) costs more than the model at 5,000 items; this path runs the same
    `RecommendationService.by_ids` with none of it. `ServingApp.__call__` hands it the request
    before Starlette's middleware stack runs. Every other route, the docs included, goes to
    FastAPI, where the same endpoint is declared (and served, if this path is switched off).
    """

    def __init__(self, service: RecommendationService):
        self.service = service

    @staticmethod
    def handles(scope: dict) -> bool:
        return scope["type"] == "http" and scope["path"] == "/recommendations" and scope["method"] == "POST"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            body = await self._read_body(scope, receive)
            status, payload = await self.service.by_ids(body)
        except BadRequest as exc:
            status, payload = exc.status, _json({"detail": exc.detail})
        except _Disconnected:
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": _JSON_HEADERS + [(b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope: dict, receive: Any) -> bytes:
        limit = self.service.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                _check_length(value, limit)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
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
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:  # chunked uploads are counted as they arrive
                raise BadRequest(413, f"request body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class ServingApp(FastAPI):
    """FastAPI, with `POST /recommendations` answered by `fast_path` (when set) before the
    middleware stack: the stack's layers cost about a tenth of the server's CPU per request."""

    fast_path: RecommendationFastPath | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # type: ignore[override]
        fast_path = self.fast_path
        if fast_path is not None and fast_path.handles(scope):
            await fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _Disconnected(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    _check_length(request.headers.get("content-length"), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body is larger than {limit} bytes")
    return bytes(body)


def create_app(manager: ModelManager, db: Database | None = None, *, inference: str = "batched",
               max_batch: int = 32, max_body_bytes: int = MAX_BODY_BYTES,
               manage_lifecycle: bool = True, fast_path: bool = True) -> ServingApp:
    """The API around a model manager. `db` (users, stars, repositories) serves the by-login route.

    With `manage_lifecycle`, the app's lifespan starts and stops the manager's poller. With
    `fast_path`, `POST /recommendations` is answered by `RecommendationFastPath`.
    """
    engine: Inference = make_inference(inference, max_batch)
    service = RecommendationService(manager, db, engine, max_body_bytes)

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
    )
    app.state.manager = manager
    app.state.inference = engine
    app.state.service = service
    if fast_path:
        app.fast_path = RecommendationFastPath(service)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return _response(exc.status, _json({"detail": exc.detail}))

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
        return _response(*await service.by_ids(await _read_body(request, max_body_bytes)))

    @app.get("/users/{login}/recommendations", response_model=RecommendationResponse,
             responses={**responses, 404: {"model": Problem, "description": "Unknown login"}})
    async def user_recommendations(
        login: Annotated[str, Path(min_length=1, max_length=MAX_LOGIN_LENGTH)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = DEFAULT_K,
    ) -> Response:
        """Top-k repositories for a user in MongoDB, from the repositories they starred."""
        return _response(*await service.by_login(login, k))

    @app.get("/model")
    async def model_status() -> Response:
        """The served model, its registry entry, when it was loaded and the last swap error."""
        return _response(200, _json({**manager.status(), "inference": engine.stats()}))

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return _response(200, b'{"status":"ok"}')

    @app.get("/readyz", responses={503: {"model": Problem}})
    async def readyz() -> Response:
        """Readiness: 200 once a model is loaded, 503 before."""
        model = manager.current
        if model is None:
            return _response(*service.not_ready())
        return _response(200, _json({"ready": True, "model": model.summary}))

    return app


def _response(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def starred_repo_ids(db: Database, login: str, limit: int = MAX_INPUT_IDS) -> list[int] | None:
    """The repository ids a user starred (most recent first, at most `limit`), None if no such user.

    Reads the `stars` collection ({user_id, repo_id, starred_at}); a database in the legacy layout
    (no `stars`, each repository lists its stargazers in `star_user_list`) is read from there.
    """
    user = db["users"].find_one({"login": login}, {"_id": 1})
    if user is None:
        return None
    user_id = user["_id"]
    stars = (db["stars"].find({"user_id": user_id}, {"repo_id": 1, "_id": 0})
             .sort([("starred_at", pymongo.DESCENDING)]).limit(limit))
    # a malformed stored id (True, -42) is not an id: True would otherwise be looked up as 1
    repo_ids = [s["repo_id"] for s in stars if is_github_id(s.get("repo_id"))]
    if not repo_ids and db["stars"].find_one({}, {"_id": 1}) is None:
        legacy = db["repositories"].find({"star_user_list": user_id}, {"_id": 1}).limit(limit)
        repo_ids = [r["_id"] for r in legacy if is_github_id(r.get("_id"))]
    return repo_ids
