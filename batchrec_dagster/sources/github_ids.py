"""What counts as a well-formed GitHub id and repository name: one rule for the pipeline and the API.

Ids: integers in 0..2**63-1 (int64, as MongoDB and the model store them); booleans are not ids
(Python's True == 1 would otherwise slip through as repository 1). GitHub's own ids start at 1;
0 is kept in the domain because the project's real sample data (github-stars-tiny) numbers its
users and repositories from 0, and the API has always accepted it (docs/serving.md). The pipeline
skips and counts anything outside the domain (`repository_bad_id`, `star_bad_repo_id`,
`star_bad_user_id`); the API answers 422 for it. `GitHubId` is the API's pydantic type for the
same rule, built from the same bounds (tests/serving/api/test_id_domain.py checks that both agree on
every edge case): a per-id Python validator would add ~6 us per 50-id request, 1.6 ms at 10,000.

Names: `owner/name` is at most 100 + 1 + 100 characters on GitHub (owner 39, repository 100);
longer values are malformed (`repository_bad_full_name`). One absurd name used to multiply memory
(fixed-width unicode arrays store every name at the width of the longest).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

MIN_ID = 0
MAX_ID = 2**63 - 1
MAX_FULL_NAME_LENGTH = 201

GitHubId = Annotated[int, Field(ge=MIN_ID, le=MAX_ID, strict=True)]


def is_github_id(value: Any) -> bool:
    """Whether `value` (as read from MongoDB or JSON) is a user or repository id."""
    return isinstance(value, int) and not isinstance(value, bool) and MIN_ID <= value <= MAX_ID


def is_full_name(value: Any) -> bool:
    """Whether `value` can be a repository's `owner/name` (non-empty, within GitHub's limits)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_FULL_NAME_LENGTH


def string_array(values: list[str]) -> np.ndarray:
    """Strings as an object array: each name costs its own length. (`np.asarray(values, dtype=str)`
    stores all of them at the width of the longest, 4 bytes per character.) storage/codec.py stores these
    as UTF-8 bytes plus offsets, never pickled."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def star_id_problem(user_id: Any, repo_id: Any) -> str | None:
    """Why a star's ids make it malformed (the skip reason counted by the readers), or None."""
    if not is_github_id(user_id):
        return "star_bad_user_id"
    if not is_github_id(repo_id):
        return "star_bad_repo_id"
    return None
