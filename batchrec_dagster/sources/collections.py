"""The source collections (`repositories`, `stars`, `users`): their names, their indexes and the
small queries that the sensors, the CLI and the server make. The bulk read of a partition is
partition_reads.py; both read these collections only through this module's names.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pymongo
import pymongo.errors
from pymongo.database import Database

from batchrec_dagster.sources.github_ids import is_github_id
from batchrec_dagster.sources.mongo_quirks import newest_date

REPOSITORIES = "repositories"
STARS = "stars"
USERS = "users"
MAX_STARRED = 10_000  # the most starred repositories one look-up returns (the API's input limit)


def ensure_source_indexes(db: Database, *, unique: bool = True, stars: bool = True) -> list[str]:
    """The indexes the pipeline's queries use. Returns what could not be created (and why).

    `stars.starred_at` serves the partition's range query; the unique (user_id, repo_id) index
    keeps star events de-duplicated at write time (the reader de-duplicates anyway, so a
    collection that already holds duplicates is still readable). `users.login` serves look-ups.
    `stars=False` (the embedded layout) leaves the stars collection alone.
    """
    wanted: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
        (USERS, [("login", pymongo.ASCENDING)], {"name": "login"}),
    ]
    if stars:
        wanted.append((STARS, [("starred_at", pymongo.ASCENDING)], {"name": "starred_at"}))
    if stars and unique:
        wanted.append((STARS, [("user_id", pymongo.ASCENDING), ("repo_id", pymongo.ASCENDING)],
                       {"name": "user_repo_unique", "unique": True}))
    problems = []
    for collection, keys, options in wanted:
        try:
            db[collection].create_index(keys, **options)
        except pymongo.errors.OperationFailure as exc:
            reason = exc.details.get("errmsg", str(exc)) if exc.details else str(exc)
            problems.append(f"{collection}.{options['name']}: {reason}")
    return problems


def user_id_of(db: Database, login: str) -> int | str | None:
    """The `_id` of the user with this login, or None. An `_id` that is not a plain int or string
    (e.g. a sub-document such as {"$gt": 0}) is never reused as a query: it would match others."""
    user = db[USERS].find_one({"login": login}, {"_id": 1})
    if user is None:
        return None
    user_id = user["_id"]
    if isinstance(user_id, bool) or not isinstance(user_id, int | str):
        return None
    return user_id


def starred_repo_ids(db: Database, login: str, limit: int = MAX_STARRED) -> list[int] | None:
    """The repository ids a user starred (most recent first, at most `limit`), None if no such user.

    Reads `stars` ({user_id, repo_id, starred_at}); a database in the older layout (no `stars`,
    each repository lists its stargazers in `star_user_list`) is read from there.
    """
    user_id = user_id_of(db, login)
    if user_id is None:
        return None
    stars = (db[STARS].find({"user_id": user_id}, {"repo_id": 1, "_id": 0})
             .sort([("starred_at", pymongo.DESCENDING)]).limit(limit))
    repo_ids = [s["repo_id"] for s in stars if is_github_id(s.get("repo_id"))]
    if not repo_ids and db[STARS].find_one({}, {"_id": 1}) is None:
        legacy = db[REPOSITORIES].find({"star_user_list": user_id}, {"_id": 1}).limit(limit)
        repo_ids = [r["_id"] for r in legacy if is_github_id(r.get("_id"))]
    return repo_ids


def repo_id_by_name(db: Database, full_name: str) -> int | None:
    doc = db[REPOSITORIES].find_one({"full_name": full_name}, {"_id": 1})
    return doc["_id"] if doc is not None and is_github_id(doc.get("_id")) else None


def newest_star_at(db: Database) -> datetime | None:
    """The newest `starred_at` in the collection (dates only)."""
    value = newest_date(db[STARS], "starred_at")
    return value.astimezone(UTC) if value else None


def count_stars(db: Database, since: datetime | None, until: datetime, limit: int) -> int:
    """Stars with since <= starred_at < until, counted up to `limit` (enough to decide).

    A bounded find on the indexed starred_at, not count_documents: cheap on a large collection.
    """
    bounds: dict[str, datetime] = {"$lt": until}
    if since is not None:
        bounds["$gte"] = since
    return sum(1 for _ in db[STARS].find({"starred_at": bounds}, {"_id": 1}).limit(limit))
