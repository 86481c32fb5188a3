"""Read the catalogue and the star events of one partition from MongoDB into columnar arrays.

Two source layouts (see docs/pipeline.md):

- "stars" (default): `repositories` (one document per repository) plus `stars` (one document per
  star event with `starred_at`). A partition sees the stars with `starred_at < window_end`. A full
  read (`read_raw_repositories`) scans them all and counts later ones (`stars_after_window`); an
  incremental read (`read_hour`) fetches only the hour's stars and extends the previous hour's
  snapshot (snapshot.py).
- "embedded" (the older layout): each repository document embeds its stargazers as
  `star_user_list`. There are no per-star times, so a partition sees the current state.

Documents are read with projections through batched cursors and appended to typed buffers, never
materialised as a list of dicts. Malformed documents are skipped and counted by reason.
"""

from __future__ import annotations

from array import array
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pymongo.database import Database

from batchrec_dagster.sources.collections import REPOSITORIES, STARS
from batchrec_dagster.sources.github_ids import is_full_name, is_github_id, star_id_problem, string_array
from batchrec_dagster.sources.snapshot import StarColumns, merge_hour, sort_stars, with_stars
from batchrec_dagster.storage.values import RawRepositories

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


def _read_catalogue(db: Database, layout: str, batch_size: int, skipped: Counter
                    ) -> tuple[_Catalogue, StarColumns]:
    """Every valid repository; in the embedded layout also its stargazers (without times)."""
    catalogue = _Catalogue()
    star_users, star_repos = array("q"), array("q")
    projection: dict[str, int] = {"_id": 1, "full_name": 1, "stars": 1, "language": 1}
    if layout == "embedded":
        projection["star_user_list"] = 1
    for doc in db[REPOSITORIES].find({}, projection, batch_size=batch_size):
        if not catalogue.add(doc, skipped) or layout != "embedded":
            continue
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
    users = _int64(star_users)
    no_times = np.full(len(users), np.datetime64("NaT"), dtype="datetime64[us]")
    return catalogue, StarColumns(users, _int64(star_repos), no_times)


def _scan_stars(cursor: Any, end_us: int, skipped: Counter) -> tuple[StarColumns, int, int]:
    """The well-formed stars before end_us; returns them, the documents read and how many were
    well-formed but at or after the end. Membership of the catalogue is decided afterwards."""
    users, repos, times = array("q"), array("q"), array("q")  # times: microseconds, UTC
    read = after_window = 0
    for doc in cursor:
        read += 1
        user_id, repo_id = doc.get("user_id"), doc.get("repo_id")
        micros = _micros(doc.get("starred_at"))
        if micros is None:
            skipped["star_bad_starred_at"] += 1
        elif micros >= end_us:
            after_window += 1  # not malformed: a later partition's star
        elif problem := star_id_problem(user_id, repo_id):
            skipped[problem] += 1
        else:
            users.append(user_id)
            repos.append(repo_id)
            times.append(micros)
    stars = StarColumns(_int64(users), _int64(repos), _int64(times).astype("datetime64[us]"))
    return stars, read, after_window


def _catalogue_only(catalogue: _Catalogue, window_start: datetime, window_end: datetime, layout: str,
                    skipped: Counter, fingerprint: str) -> RawRepositories:
    empty = StarColumns.empty()
    return RawRepositories(
        repo_ids=_int64(catalogue.ids), full_names=string_array(catalogue.names),
        repo_stars=_int64(catalogue.stars), languages=string_array(catalogue.languages),
        star_user_ids=empty.user_ids, star_repo_ids=empty.repo_ids, starred_at=empty.starred_at,
        window_start=window_start.astimezone(UTC), window_end=window_end.astimezone(UTC), layout=layout,
        skipped=dict(skipped), source_fingerprint=fingerprint)


_STAR_FIELDS = {"_id": 0, "user_id": 1, "repo_id": 1, "starred_at": 1}


def read_raw_repositories(db: Database, window_start: datetime, window_end: datetime, *,
                          layout: str = "stars", batch_size: int = DEFAULT_BATCH_SIZE,
                          fingerprint: str = "") -> RawRepositories:
    """The catalogue and the stars a partition [window_start, window_end) sees: a full read."""
    if layout not in LAYOUTS:
        raise SourceError(f"source layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    _check_aware(window_start, window_end)
    skipped: Counter = Counter()
    catalogue, stars = _read_catalogue(db, layout, batch_size, skipped)
    read = after_window = 0
    if layout == "stars":
        # One pass over the whole collection, filtered here rather than with {"$lt": window_end}:
        # a range query never returns stars whose starred_at is missing or not a date (MongoDB
        # compares within a type), so they could not be counted; finding them with a second
        # `$type` query costs a full scan on nx-27017. A full read sees nearly every star anyway
        # (all history before its end). Incremental hours use the range query (read_hour).
        cursor = db[STARS].find({}, _STAR_FIELDS, batch_size=batch_size)
        stars, read, after_window = _scan_stars(cursor, _micros(window_end), skipped)
    value = _catalogue_only(catalogue, window_start, window_end, layout, skipped, fingerprint)
    kept, orphans, duplicates = sort_stars(value.repo_ids, stars)
    skipped["star_duplicate"] += duplicates
    return with_stars(value, kept, orphans, skipped, stars_after_window=after_window, stars_read=read)


def read_hour(db: Database, previous: RawRepositories, window_start: datetime, window_end: datetime, *,
              batch_size: int = DEFAULT_BATCH_SIZE, fingerprint: str = "") -> RawRepositories:
    """An incremental read (stars layout): the whole catalogue, the stars with window_start <=
    starred_at < window_end through the starred_at index, merged into `previous` (the snapshot
    that ends at window_start; snapshot.plan_read decides when that is allowed)."""
    _check_aware(window_start, window_end)
    skipped: Counter = Counter()
    catalogue, _ = _read_catalogue(db, "stars", batch_size, skipped)
    cursor = db[STARS].find({"starred_at": {"$gte": window_start, "$lt": window_end}}, _STAR_FIELDS,
                            batch_size=batch_size)
    hour_skipped: Counter = Counter()
    hour, read, _ = _scan_stars(cursor, _micros(window_end), hour_skipped)
    value = _catalogue_only(catalogue, window_start, window_end, "stars", skipped, fingerprint)
    merged = merge_hour(previous, value, hour, hour_skipped)
    merged.stars_read = read
    return merged


def _check_aware(*bounds: datetime) -> None:
    if any(b.tzinfo is None for b in bounds):
        raise ValueError("window bounds must be timezone-aware")


def _micros(value: Any) -> int | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:  # a client without tz_aware=True; MongoDB dates are UTC
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)


def _int64(buffer: array) -> np.ndarray:
    return np.frombuffer(buffer, dtype=np.int64).copy() if len(buffer) else np.zeros(0, dtype=np.int64)
