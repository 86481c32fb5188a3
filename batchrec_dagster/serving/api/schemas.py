"""The API's documented shapes and input limits (OpenAPI), shared by the routes and the fast path."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from batchrec_dagster.sources.github_ids import MAX_ID, GitHubId

MAX_K = 1000
DEFAULT_K = 20
MAX_INPUT_IDS = 10_000
MAX_BODY_BYTES = 1 << 20           # 10,000 ids of 20 digits fit with room to spare
MAX_REPO_ID = MAX_ID               # ids are int64 in the model and in MongoDB (sources/github_ids.py)
MAX_LOGIN_LENGTH = 100

RepoId = GitHubId  # the pipeline's rule (github.is_github_id): the API serves what it trains on
FULL_NAME_PATTERN = r"^[\w.-]+/[\w.-]+$"  # GitHub's owner/name
MAX_NAME_LENGTH = 200  # owner (39) + "/" + name (100), with room
RepoName = Annotated[str, StringConstraints(pattern=FULL_NAME_PATTERN, max_length=MAX_NAME_LENGTH)]


class RecommendationRequest(BaseModel):
    """The repositories a user has starred. Strict: ids must be JSON integers, not strings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    repo_ids: list[RepoId | RepoName] = Field(max_length=MAX_INPUT_IDS, description=(
        "The repositories the user has starred: integer ids or `owner/name` strings (names are "
        "looked up in the model's vocabulary, case-insensitively). Duplicates are ignored; ids "
        "the model does not know are ignored and listed in `unknown_repo_ids`, names in "
        "`unknown_repo_names`."))
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
    unknown_repo_names: list[str] = Field(description="Names in the input the model does not know.")
    duplicates_ignored: int
    login: str | None = None


class Problem(BaseModel):
    detail: Any


class BadRequest(Exception):
    """A request the server refuses with `status` (4xx) and a JSON `{"detail": ...}` body."""

    def __init__(self, status: int, detail: Any, headers: list[tuple[bytes, bytes]] | None = None):
        self.status = status
        self.detail = detail
        self.headers = headers or []


def to_json(content: Any) -> bytes:
    """Compact JSON bytes (every body the server writes by hand goes through here)."""
    return json.dumps(content, separators=(",", ":")).encode()


def problem(detail: Any) -> bytes:
    return to_json({"detail": detail})


def validation_problem(exc: ValidationError) -> bytes:
    """A 422 body for invalid input, without echoing it (it may be invalid UTF-8 or a megabyte long)."""
    return to_json({"detail": exc.errors(include_url=False, include_context=False, include_input=False)})


def json_response(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type="application/json")
