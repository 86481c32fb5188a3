"""The request logic, shared by the FastAPI routes, the ASGI fast path and the page: bytes in,
(status, JSON bytes) out. Every request reads the served model once (`manager.current`) and uses
that object to the end."""

from __future__ import annotations

import json
import logging
import math
from itertools import repeat

import numpy as np
import pymongo
import pymongo.errors
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from pymongo.database import Database

from batchrec_dagster.serving.api.schemas import RecommendationRequest, problem, validation_problem
from batchrec_dagster.serving.model.inference import Inference
from batchrec_dagster.serving.model.loaded import LoadedModel
from batchrec_dagster.serving.model.manager import ModelManager
from batchrec_dagster.sources.collections import starred_repo_ids

log = logging.getLogger("batchrec.serving")

# a login look-up (all its queries, retries and server selection) answers or fails within this:
# a MongoDB that is down, or frozen with connections open, must not hold a request longer
USER_LOOKUP_TIMEOUT_S = 2.0


def _starred_within(db: Database, login: str, timeout_s: float) -> list[int] | None:
    with pymongo.timeout(timeout_s):  # client-side operation timeout, for every query inside
        return starred_repo_ids(db, login)


def resolve_names(model: LoadedModel, repos: list[int | str]) -> tuple[list[int], list[str]]:
    """Repository ids for a list of ids and owner/name strings (names through the model's
    vocabulary, case-insensitively, in input order), and the names the model does not know."""
    if all(type(r) is int for r in repos):  # the common case: ids only
        return repos, []  # type: ignore[return-value]
    ids: list[int] = []
    unknown: list[str] = []
    index = model.name_index
    for repo in repos:
        if type(repo) is int:
            ids.append(repo)
        elif (found := index.get(repo.lower())) is not None:
            ids.append(found)
        else:
            unknown.append(repo)
    return ids, unknown


def columns_of(model: LoadedModel, repo_ids: list[int]) -> tuple[np.ndarray, list[int], int]:
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


class UserDatabaseUnavailable(RuntimeError):
    """MongoDB did not answer the login look-up (down, unreachable, timed out)."""


class RecommendationService:
    """Recommendations by ids and by login, as response bytes."""

    def __init__(self, manager: ModelManager, db: Database | None, engine: Inference,
                 max_body_bytes: int):
        self.manager = manager
        self.db = db
        self.engine = engine
        self.max_body_bytes = max_body_bytes

    def not_ready(self) -> tuple[int, bytes]:
        manager = self.manager
        error, outcome = manager.last_error, manager.last_outcome
        reason = "no model loaded yet" if manager.withdrawn is None else f"no model: {manager.withdrawn}"
        if error is not None:
            reason += f"; last load attempt failed: {error.message}"
        elif outcome is not None and outcome.outcome == "no_model":
            reason += f"; {outcome.message}"
        return 503, problem(reason)

    async def by_ids(self, body: bytes) -> tuple[int, bytes]:
        try:
            payload = RecommendationRequest.model_validate_json(body)
        except ValidationError as exc:
            return 422, validation_problem(exc)
        model = self.manager.current  # read once: this request uses this model to the end
        if model is None:
            return self.not_ready()
        repo_ids, unknown_names = resolve_names(model, payload.repo_ids)
        return 200, await self.recommend(model, repo_ids, payload.k, unknown_names=unknown_names)

    async def starred(self, login: str) -> list[int] | None:
        """The user's starred repository ids (None: no such login, or an unusable `_id`).
        UserDatabaseUnavailable when MongoDB does not answer."""
        if self.db is None:
            return None
        try:
            return await run_in_threadpool(_starred_within, self.db, login, USER_LOOKUP_TIMEOUT_S)
        except pymongo.errors.PyMongoError as exc:
            log.warning("login look-up failed: %s: %s", type(exc).__name__, exc)
            raise UserDatabaseUnavailable(f"user database unavailable ({type(exc).__name__})") from exc

    async def by_login(self, login: str, k: int) -> tuple[int, bytes]:
        if self.db is None:
            return 404, problem("this server has no user database")
        model = self.manager.current
        if model is None:
            return self.not_ready()
        try:
            found = await self.starred(login)
        except UserDatabaseUnavailable as exc:
            return 503, problem(str(exc))
        if found is None:
            return 404, problem(f"no user with login {login!r}")
        return 200, await self.recommend(model, found, k, login)

    async def top_k(self, model: LoadedModel, known: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and scores of the top-k for one user (padding dropped)."""
        indices, scores = await self.engine.recommend(model, known, k)
        keep = indices >= 0  # fewer candidates than k: padding
        return indices[keep], scores[keep]

    async def recommend(self, model: LoadedModel, repo_ids: list[int], k: int,
                        login: str | None = None, unknown_names: list[str] | None = None) -> bytes:
        known, unknown_ids, duplicates = columns_of(model, repo_ids)
        indices, scores = await self.top_k(model, known, k)
        # hand-assembled JSON from fragments encoded at load time (json.dumps of the whole body
        # costs more than the rest of the handler); same document as RecommendationResponse
        recs = ",".join(p + (repr(s) if math.isfinite(s) else "null") + "}"
                        for p, s in zip(model.json_prefix[indices].tolist(), scores.tolist(), strict=True))
        unknown = json.dumps(unknown_ids) if unknown_ids else "[]"
        login_part = f',"login":{json.dumps(login)}' if login is not None else ""
        return (f'{{"model":{model.summary_json},"k":{k},"recommendations":[{recs}],'
                f'"popularity_fallback":{"false" if known.size else "true"},'
                f'"unknown_repo_ids":{unknown},'
                f'"unknown_repo_names":{json.dumps(unknown_names) if unknown_names else "[]"},'
                f'"duplicates_ignored":{duplicates}{login_part}}}').encode()
