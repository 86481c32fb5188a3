"""The recommendation API (FastAPI): recommendations by starred repositories or by user login.

Run it in ONE process (uvicorn workers=1): the model and its hot swap live in process memory.
Every request reads the served model once (`manager.current`) and uses that object to the end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
import pymongo
from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo.database import Database

from batchrec_dagster import __version__
from batchrec_dagster.serving.inference import Inference, make_inference
from batchrec_dagster.serving.model_manager import LoadedModel, ModelManager

MAX_K = 1000
DEFAULT_K = 20
MAX_INPUT_IDS = 10_000
MAX_BODY_BYTES = 1 << 20           # 10,000 ids of 20 digits fit with room to spare
MAX_REPO_ID = 2**63 - 1            # ids are int64 in the model and in MongoDB
MAX_LOGIN_LENGTH = 100

RepoId = Annotated[int, Field(ge=0, le=MAX_REPO_ID)]


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


class _BadRequest(Exception):
    def __init__(self, status: int, detail: Any):
        self.status = status
        self.detail = detail


def _json(content: Any, status: int = 200) -> Response:
    return Response(json.dumps(content, separators=(",", ":")), status_code=status,
                    media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _BadRequest(413, f"request body is larger than {limit} bytes")
        except ValueError:
            raise _BadRequest(400, "invalid Content-Length header") from None
    body = bytearray()
    async for chunk in request.stream():  # chunked uploads are counted as they arrive
        body += chunk
        if len(body) > limit:
            raise _BadRequest(413, f"request body is larger than {limit} bytes")
    return bytes(body)


def _dedupe(repo_ids: list[int]) -> tuple[np.ndarray, int]:
    unique = list(dict.fromkeys(repo_ids))
    return np.asarray(unique, dtype=np.int64), len(repo_ids) - len(unique)


def create_app(manager: ModelManager, db: Database | None = None, *, inference: str = "batched",
               max_batch: int = 32, max_body_bytes: int = MAX_BODY_BYTES,
               manage_lifecycle: bool = True) -> FastAPI:
    """The API around a model manager. `db` (users, stars, repositories) serves the by-login route.

    With `manage_lifecycle`, the app's lifespan starts and stops the manager's poller.
    """
    engine: Inference = make_inference(inference, max_batch)

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

    app = FastAPI(
        title="batchrec recommendations",
        version=__version__,
        description=("Recommends GitHub repositories from the ones a user starred, with the best "
                     "model in the batchrec registry (swapped in without downtime)."),
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.inference = engine

    @app.exception_handler(_BadRequest)
    async def bad_request(request: Request, exc: _BadRequest) -> Response:
        return _json({"detail": exc.detail}, exc.status)

    def not_ready() -> Response:
        error = manager.last_error
        reason = "no model loaded yet"
        if error is not None:
            reason += f"; last load attempt failed: {error.message}"
        elif manager.last_outcome is not None and manager.last_outcome.outcome == "no_model":
            reason += "; the registry holds no fresh model"
        return _json({"detail": reason}, 503)

    async def recommend(model: LoadedModel, repo_ids: np.ndarray, duplicates: int, k: int,
                        login: str | None = None) -> Response:
        columns = model.recommender.index_of(repo_ids)
        known = columns >= 0
        indices, scores = await app.state.inference.recommend(model, columns[known], k)
        keep = indices >= 0  # fewer candidates than k: padding
        indices, scores = indices[keep], scores[keep]
        ids = model.recommender.item_ids[indices].tolist()
        names = model.names[indices].tolist()
        body = {
            "model": model.summary,
            "k": k,
            "recommendations": [{"repo_id": i, "name": n, "score": s}
                                for i, n, s in zip(ids, names, scores.tolist(), strict=True)],
            "popularity_fallback": not bool(known.any()),
            "unknown_repo_ids": repo_ids[~known].tolist(),
            "duplicates_ignored": duplicates,
        }
        if login is not None:
            body["login"] = login
        return _json(body)

    responses = {503: {"model": Problem, "description": "No model loaded yet"},
                 422: {"model": Problem, "description": "Invalid input"}}

    @app.post("/recommendations", response_model=RecommendationResponse,
              responses={**responses, 413: {"model": Problem, "description": "Body too large"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": RecommendationRequest.model_json_schema()}}}})
    async def post_recommendations(request: Request) -> Response:
        """Top-k repositories for a user given as the repositories they starred (fold-in)."""
        body = await _read_body(request, max_body_bytes)
        try:
            payload = RecommendationRequest.model_validate_json(body)
        except ValidationError as exc:
            # no input echo: it may be invalid UTF-8 or a megabyte long
            raise _BadRequest(422, exc.errors(include_url=False, include_context=False,
                                              include_input=False)) from None
        model = manager.current
        if model is None:
            return not_ready()
        repo_ids, duplicates = _dedupe(payload.repo_ids)
        return await recommend(model, repo_ids, duplicates, payload.k)

    @app.get("/users/{login}/recommendations", response_model=RecommendationResponse,
             responses={**responses, 404: {"model": Problem, "description": "Unknown login"}})
    async def user_recommendations(
        login: Annotated[str, Path(min_length=1, max_length=MAX_LOGIN_LENGTH)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = DEFAULT_K,
    ) -> Response:
        """Top-k repositories for a user in MongoDB, from the repositories they starred."""
        if db is None:
            return _json({"detail": "this server has no user database"}, 404)
        model = manager.current
        if model is None:
            return not_ready()
        found = await run_in_threadpool(starred_repo_ids, db, login)
        if found is None:
            return _json({"detail": f"no user with login {login!r}"}, 404)
        repo_ids, duplicates = _dedupe(found)
        return await recommend(model, repo_ids, duplicates, k, login)

    @app.get("/model")
    async def model_status() -> Response:
        """The served model, its registry entry, when it was loaded and the last swap error."""
        return _json(manager.status())

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return _json({"status": "ok"})

    @app.get("/readyz", responses={503: {"model": Problem}})
    async def readyz() -> Response:
        """Readiness: 200 once a model is loaded, 503 before."""
        model = manager.current
        if model is None:
            return not_ready()
        return _json({"ready": True, "model": model.summary})

    return app


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
    repo_ids = [s["repo_id"] for s in stars if isinstance(s.get("repo_id"), int)]
    if not repo_ids and db["stars"].find_one({}, {"_id": 1}) is None:
        legacy = db["repositories"].find({"star_user_list": user_id}, {"_id": 1}).limit(limit)
        repo_ids = [r["_id"] for r in legacy if isinstance(r.get("_id"), int)]
    return repo_ids
