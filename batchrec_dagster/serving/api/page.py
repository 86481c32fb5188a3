"""The page at `GET /` and the two JSON routes it reads: a side-by-side of the served model (the
champion, or the operators' pin) and the best challenger for one input, and the score history.

Champion and challenger come from the serving order (`registry.champions.serving_order`): the served model,
and the next one in that order that loads, which the manager keeps loaded for this
(`BATCHREC_SERVE_CHALLENGER`). The history is the served model's comparable score on each
evaluation window (`evaluations`), the champion's changes (`champions`) and the newest
registrations. The page is one static file (no build step, nothing loaded from elsewhere); it
asks for an API key when the server needs one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pymongo.database import Database

from batchrec_dagster.registry.champions import champion_history
from batchrec_dagster.registry.evaluations import history_of, latest_for_models
from batchrec_dagster.registry.models import recent_entries
from batchrec_dagster.serving.api.schemas import (
    FULL_NAME_PATTERN,
    MAX_LOGIN_LENGTH,
    json_response,
    problem,
    to_json,
    validation_problem,
)
from batchrec_dagster.serving.api.service import RecommendationService, UserDatabaseUnavailable, columns_of
from batchrec_dagster.serving.api.status import describe
from batchrec_dagster.serving.http.fast_path import read_request_body
from batchrec_dagster.serving.model.loaded import LoadedModel, json_safe
from batchrec_dagster.serving.model.manager import ModelManager

PAGE = Path(__file__).with_name("static") / "index.html"
MAX_NAMES = 1000
_GITHUB_URL = re.compile(r"^https?://(?:www\.)?github\.com/([\w.-]+/[\w.-]+)", re.IGNORECASE)
_FULL_NAME = re.compile(FULL_NAME_PATTERN)
# the page talks only to this server: nothing from elsewhere may load, even if injected
PAGE_HEADERS = {"cache-control": "no-cache",
                "content-security-policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                           "script-src 'unsafe-inline'; img-src 'self' data:"}


class CompareRequest(BaseModel):
    """Either a login (their stars in MongoDB) or repositories (names, ids or GitHub URLs)."""

    model_config = ConfigDict(extra="forbid")

    login: str | None = Field(None, min_length=1, max_length=MAX_LOGIN_LENGTH)
    repos: str | None = Field(None, max_length=100_000, description=(
        "owner/name, numeric ids or https://github.com/owner/name, separated by spaces, commas or lines"))
    k: int = Field(10, ge=1, le=100)

    @model_validator(mode="after")
    def _one_input(self) -> CompareRequest:
        if (self.login is None) == (self.repos is None):
            raise ValueError("give either login or repos")
        return self


def resolve_repos(text: str, models: list[LoadedModel]) -> tuple[list[int], list[str]]:
    """Repository ids for the pasted tokens (names through the models' vocabularies), and the
    tokens that name no repository the models know."""
    ids: list[int] = []
    unknown: list[str] = []
    indexes = [m.name_index for m in models]
    for token in [t for t in re.split(r"[\s,]+", text) if t][:MAX_NAMES]:
        if token.isdigit():
            ids.append(int(token))
            continue
        url = _GITHUB_URL.match(token)
        name = (url.group(1) if url else token).removesuffix(".git").lower()
        found = next((index[name] for index in indexes if name in index), None) \
            if _FULL_NAME.match(name) else None
        if found is None:
            unknown.append(token)
        else:
            ids.append(found)
    return ids, unknown


async def _ranked(service: RecommendationService, manager: ModelManager, model: LoadedModel,
                  repo_ids: list[int], k: int) -> dict[str, Any]:
    known, unknown, _ = columns_of(model, repo_ids)
    indices, scores = await service.top_k(model, known, k)
    ids = model.recommender.item_ids[indices].tolist()
    names = model.names[indices].tolist()
    recs = [{"rank": rank, "repo_id": i, "name": n, "score": round(float(s), 4),
             "url": f"https://github.com/{n}" if isinstance(n, str) and _FULL_NAME.match(n) else None}
            for rank, (i, n, s) in enumerate(zip(ids, names, scores.tolist(), strict=True), 1)]
    return {"model": describe(model, manager.now()), "recommendations": recs,
            "popularity_fallback": known.size == 0, "unknown_repo_ids": unknown}


def add_page_routes(app: FastAPI, service: RecommendationService, manager: ModelManager,
                    db: Database | None) -> None:
    html = PAGE.read_bytes()  # read once: the page never changes while the server runs

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(html, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.post("/page/compare", responses={413: {"description": "Body too large"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": CompareRequest.model_json_schema()}}}})
    async def compare(http_request: Request) -> Response:
        """The served model and the best challenger side by side for one input; `in_both` marks
        repositories both recommend. Bodies over 1 MiB: 413, refused as they arrive."""
        # read within the limit before parsing: a pydantic body parameter would buffer it all
        body = await read_request_body(http_request, service.max_body_bytes)
        try:
            request = CompareRequest.model_validate_json(body)
        except ValidationError as exc:
            return json_response(422, validation_problem(exc))
        champion, challenger = manager.current, manager.challenger
        if champion is None:
            return json_response(*service.not_ready())
        unknown_tokens: list[str] = []
        if request.login is not None:
            try:
                repo_ids = await service.starred(request.login)
            except UserDatabaseUnavailable as exc:
                return json_response(503, problem(str(exc)))
            if repo_ids is None:
                return json_response(404, problem(f"no user with login {request.login!r}"))
        else:
            models = [m for m in (champion, challenger) if m is not None]
            repo_ids, unknown_tokens = await run_in_threadpool(resolve_repos, request.repos or "", models)
        sides = {"champion": await _ranked(service, manager, champion, repo_ids, request.k),
                 "challenger": None if challenger is None else
                 await _ranked(service, manager, challenger, repo_ids, request.k)}
        overlap: set[int] = set()
        if sides["challenger"] is not None:
            overlap = ({r["repo_id"] for r in sides["champion"]["recommendations"]}
                       & {r["repo_id"] for r in sides["challenger"]["recommendations"]})
        for side in sides.values():
            for rec in side["recommendations"] if side else []:
                rec["in_both"] = rec["repo_id"] in overlap
        body = {"input": {"login": request.login, "repo_ids": repo_ids[:MAX_NAMES],
                          "unknown_tokens": unknown_tokens}, **sides, "overlap": len(overlap),
                "challenger_note": None if challenger is not None else (
                    "no challenger loaded: " + ("no other fresh model loads" if manager.load_challenger
                                                else "BATCHREC_SERVE_CHALLENGER is off"))}
        return json_response(200, to_json(body))

    @app.get("/page/history")
    async def history(limit: int = Query(48, ge=1, le=500)) -> Response:
        """The served model's comparable scores, window by window; the champion's changes; and the
        newest registry entries with their own and their latest comparable score."""
        if db is None:
            return json_response(200, to_json({"served": [], "champions": [], "entries": []}))
        served = manager.current.summary["id"] if manager.current else None
        challenger = manager.challenger.summary["id"] if manager.challenger else None
        try:
            body = await run_in_threadpool(_history, db, served, challenger, limit)
        except Exception as exc:  # the registry is down: the page says so
            return json_response(503, problem(f"registry unavailable ({type(exc).__name__})"))
        return json_response(200, to_json(body))


def _history(db: Database, served: str | None, challenger: str | None, limit: int) -> dict[str, Any]:
    entries = recent_entries(db, limit)
    comparable = latest_for_models(db, [str(e["_id"]) for e in entries])
    rows = []
    for e in entries:
        model_id = str(e["_id"])
        latest = comparable.get(model_id) or {}
        rows.append({"id": model_id, "served": model_id == served, "challenger": model_id == challenger,
                     **{k: json_safe(e.get(k)) for k in ("partition_key", "data_end", "created_at", "score")},
                     "comparable_score": json_safe(latest.get("score")),
                     "comparable_window_end": json_safe(latest.get("window_end"))})
    served_scores = [{"window_end": json_safe(ev.get("window_end")), "score": json_safe(ev.get("score"))}
                     for ev in reversed(history_of(db, served, limit))] if served else []
    fields = ("model_id", "promoted_at", "reason", "score", "window_end")
    champions = [{k: json_safe(c.get(k)) for k in fields} for c in champion_history(db, 10)]
    return {"served": served_scores, "champions": champions, "entries": rows}
