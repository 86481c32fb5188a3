"""Read the catalogue and the star events of one partition from MongoDB into columnar arrays.

Two source layouts (see docs/pipeline.md):

- "stars" (default): `repositories` (one document per repository) plus `stars` (one document per
  star event with `starred_at`). A partition sees the stars with `starred_at < window_end`;
  later ones are counted (`stars_after_window`) and left out.
- "embedded" (the older layout): each repository document embeds its stargazers as
  `star_user_list`. There are no per-star times, so a partition sees the current state.

Documents are read with projections through batched cursors and appended to typed buffers, never
materialised as a list of dicts. Malformed documents are skipped and counted by reason; what is a
well-formed id or name is decided in github.py (the API applies the same id rule).
"""

from __future__ import annotations

from array import array
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pymongo.database import Database

from batchrec_dagster.github import is_full_name, is_github_id, string_array
from batchrec_dagster.stars import REPOSITORIES, STARS
from batchrec_dagster.types import RawRepositories

LAYOUTS = ("stars", "embedded")
DEFAULT_BATCH_SIZE = 5000
_INT64_MAX = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SourceError(ValueError):
    """The source settings are invalid (e.g. an unknown layout)."""


def _is_int(value: Any) -> bool:
    """An int64 count (not an id: ids follow github.is_github_id)."""
    return isinstance(value, int) and not isinstance(value, bool) and -_INT64_MAX <= value <= _INT64_MAX


class _Catalogue:
    """Column buffers for repositories, validated document by document."""

    def __init__(self) -> None:
        self.ids = array("q")
        self.stars = array("q")
        self.names: list[str] = []
        self.languages: list[str] = []
        self.seen: set[int] = set()

    def add(self, doc: dict[str, Any], skipped: Counter) -> bool:
        repo_id, name, stars = doc.get("_id"), doc.get("full_name"), doc.get("stars")
        language = doc.get("language")
        if not is_github_id(repo_id):
            skipped["repository_bad_id"] += 1
            return False
        if not is_full_name(name):
            skipped["repository_bad_full_name"] += 1
            return False
        if not _is_int(stars) or stars < 0:
            skipped["repository_bad_stars"] += 1
            return False
        if language is not None and not isinstance(language, str):
            skipped["repository_bad_language"] += 1
            return False
        if repo_id in self.seen:
            skipped["repository_duplicate"] += 1
            return False
        self.seen.add(repo_id)
        self.ids.append(repo_id)
        self.stars.append(stars)
        self.names.append(name)
        self.languages.append(language or "")
        return True


def _dedupe_pairs(users: np.ndarray, repos: np.ndarray, times: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Keep the earliest event per (user, repo); returns the kept columns and how many were dropped."""
    if len(users) == 0:
        return users, repos, times, 0
    # lexsort's last key is the primary one: user, then repo, then time (NaT sorts last)
    order = np.lexsort((times, repos, users))
    u, r, t = users[order], repos[order], times[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (r[1:] != r[:-1])
    return u[first], r[first], t[first], int(len(u) - first.sum())


def read_raw_repositories(db: Database, window_start: datetime, window_end: datetime, *,
                          layout: str = "stars", batch_size: int = DEFAULT_BATCH_SIZE
                          ) -> RawRepositories:
    """The catalogue and the stars a partition [window_start, window_end) sees."""
    if layout not in LAYOUTS:
        raise SourceError(f"source layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if window_end.tzinfo is None or window_start.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware")
    skipped: Counter = Counter()
    catalogue = _Catalogue()
    star_users, star_repos = array("q"), array("q")
    star_times = array("q")  # microseconds since the epoch, UTC

    projection: dict[str, int] = {"_id": 1, "full_name": 1, "stars": 1, "language": 1}
    if layout == "embedded":
        projection["star_user_list"] = 1
    for doc in db[REPOSITORIES].find({}, projection, batch_size=batch_size):
        if not catalogue.add(doc, skipped):
            continue
        if layout == "embedded":
            stargazers = doc.get("star_user_list")
            if stargazers is None:
                continue  # a repository nobody starred yet
            if not isinstance(stargazers, list):
                skipped["repository_bad_star_user_list"] += 1
                continue
            for user_id in stargazers:
                if is_github_id(user_id):
                    star_users.append(user_id)
                    star_repos.append(doc["_id"])
                else:
                    skipped["star_bad_user_id"] += 1

    after_window = 0
    if layout == "stars":
        # One pass over the whole collection, filtered here rather than with {"$lt": window_end}:
        # a range query never returns stars whose starred_at is missing or not a date (MongoDB
        # compares within a type), so they could not be counted; finding them with a second
        # `$type` query costs a full scan on nx-27017. A partition reads nearly every star anyway
        # (it sees all history before its end).
        known = catalogue.seen
        end_us = _micros(window_end)
        cursor = db[STARS].find({}, {"_id": 0, "user_id": 1, "repo_id": 1, "starred_at": 1},
                                batch_size=batch_size)
        for doc in cursor:
            user_id, repo_id = doc.get("user_id"), doc.get("repo_id")
            micros = _micros(doc.get("starred_at"))
            if micros is None:
                skipped["star_bad_starred_at"] += 1
            elif micros >= end_us:
                after_window += 1  # not malformed: a later partition's star
            elif not is_github_id(user_id):
                skipped["star_bad_user_id"] += 1
            elif not is_github_id(repo_id):
                skipped["star_bad_repo_id"] += 1
            elif repo_id not in known:
                skipped["star_unknown_repo"] += 1
            else:
                star_users.append(user_id)
                star_repos.append(repo_id)
                star_times.append(micros)

    users, repos = _int64(star_users), _int64(star_repos)
    if layout == "stars":
        times = _int64(star_times).astype("datetime64[us]")
    else:
        times = np.full(len(users), np.datetime64("NaT"), dtype="datetime64[us]")
    users, repos, times, duplicates = _dedupe_pairs(users, repos, times)
    if duplicates:
        skipped["star_duplicate"] += duplicates

    return RawRepositories(
        repo_ids=_int64(catalogue.ids),
        full_names=string_array(catalogue.names),
        repo_stars=_int64(catalogue.stars),
        languages=string_array(catalogue.languages),
        star_user_ids=users,
        star_repo_ids=repos,
        starred_at=times,
        window_start=window_start.astimezone(UTC),
        window_end=window_end.astimezone(UTC),
        layout=layout,
        skipped=dict(sorted(skipped.items())),
        stars_after_window=after_window,
    )


def _micros(value: Any) -> int | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:  # a client without tz_aware=True; MongoDB dates are UTC
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _int64(buffer: array) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.int64).copy() if len(buffer) else np.zeros(0, dtype=np.int64)
