"""Demo data: GitHub-shaped repositories, users and star events with structure worth learning.

Every repository belongs to one of a few latent topics and has a power-law popularity; every user
likes one or two topics and stars mostly (not only) popular repositories of those topics. So a
personalised model (RecVAE) clearly beats the popularity ranking, as on real GitHub data. Star
times are spread over the last `days` days, so hourly partitions see growing prefixes of the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pymongo.database import Database

from batchrec_dagster.sources.collections import REPOSITORIES, STARS, USERS, ensure_source_indexes

META = "batchrec_meta"
DATASET_DOC = "dataset"
_TOPICS = ("vision", "nlp", "web", "devops", "data", "games", "crypto", "mobile", "audio", "robotics",
           "database", "security", "compilers", "embedded", "science", "finance")
_LANGUAGES = ("Python", "Python", "TypeScript", "Go", "Python", "C#", "Rust", "Kotlin", "C++", "C++",
              "Rust", "Go", "Rust", "C", "Julia", "Java")
_KINDS = ("toolkit", "lib", "cli", "engine", "sdk", "framework", "kit", "server", "client", "utils")
REPO_ID_BASE = 10_000_000
USER_ID_BASE = 50_000_000


@dataclass(frozen=True)
class DemoSpec:
    users: int = 2000
    repos: int = 800
    topics: int = 12
    mean_stars_per_user: float = 25.0
    in_topic_share: float = 0.85   # share of a user's stars that go to their own topics
    days: float = 7.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.users < 10 or self.repos < 20 or not 1 <= self.topics <= len(_TOPICS):
            raise ValueError(f"a demo needs >= 10 users, >= 20 repositories and 1..{len(_TOPICS)} topics; "
                             f"got {self.users} users, {self.repos} repositories, {self.topics} topics")
        if self.mean_stars_per_user <= 0 or self.days <= 0:
            raise ValueError("stars per user and days must be positive")


@dataclass
class SourceData:
    """Columns of the three source collections, ready to write (demo or imported CSV)."""

    repo_ids: np.ndarray
    full_names: np.ndarray
    repo_stars: np.ndarray     # GitHub-like star counts (>= the stars in the data)
    languages: np.ndarray      # "" when unknown
    repo_topics: np.ndarray    # str, "" when unknown
    user_ids: np.ndarray
    logins: np.ndarray
    star_user_ids: np.ndarray
    star_repo_ids: np.ndarray
    starred_at: np.ndarray     # datetime64[us], UTC


def generate_demo(spec: DemoSpec, end: datetime) -> SourceData:
    """Deterministic for (spec, end)."""
    rng = np.random.default_rng(spec.seed)
    n_repos, n_users, n_topics = spec.repos, spec.users, spec.topics
    repo_topics = rng.integers(0, n_topics, n_repos)
    # Zipf-like popularity: weight 1 / rank^1.1, ranks shuffled over repositories
    weight = 1.0 / np.arange(1, n_repos + 1) ** 1.1
    weight = weight[rng.permutation(n_repos)]
    by_topic = [np.flatnonzero(repo_topics == t) for t in range(n_topics)]
    global_p = weight / weight.sum()

    counts = np.clip(rng.lognormal(np.log(spec.mean_stars_per_user), 0.6, n_users).astype(int),
                     5, max(5, n_repos // 3))
    users_col: list[np.ndarray] = []
    repos_col: list[np.ndarray] = []
    for user in range(n_users):
        liked = rng.choice(n_topics, size=1 + int(rng.random() < 0.5), replace=False)
        pool = np.concatenate([by_topic[t] for t in liked])
        n = int(counts[user])
        n_in = min(len(pool), int(round(n * spec.in_topic_share)))
        chosen = set()
        if n_in:
            p = weight[pool] / weight[pool].sum()
            chosen.update(rng.choice(pool, size=n_in, replace=False, p=p).tolist())
        while len(chosen) < n:
            chosen.update(rng.choice(n_repos, size=n - len(chosen), p=global_p).tolist())
        items = np.fromiter(chosen, dtype=np.int64)
        users_col.append(np.full(len(items), user, dtype=np.int64))
        repos_col.append(items)
    star_users = np.concatenate(users_col)
    star_repos = np.concatenate(repos_col)

    span_us = int(spec.days * 86_400 * 1_000_000)
    end_us = int((end.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))
    times = (end_us - 1 - rng.integers(0, span_us, len(star_users))).astype("datetime64[us]")

    in_data = np.bincount(star_repos, minlength=n_repos)
    # GitHub counts include stargazers outside the sample; a few obscure repos stay under 10
    repo_stars = in_data * rng.integers(8, 40, n_repos) + rng.integers(0, 12, n_repos)
    obscure = rng.random(n_repos) < 0.03
    repo_stars[obscure] = rng.integers(1, 10, int(obscure.sum()))
    owners = [f"demo-{_TOPICS[t]}-org{rng.integers(1, 6)}" for t in repo_topics]
    names = np.asarray([f"{owners[j]}/{_TOPICS[repo_topics[j]]}-{_KINDS[j % len(_KINDS)]}-{j}"
                        for j in range(n_repos)], dtype=str)
    return SourceData(
        repo_ids=REPO_ID_BASE + np.arange(n_repos, dtype=np.int64),
        full_names=names,
        repo_stars=repo_stars.astype(np.int64),
        languages=np.asarray([_LANGUAGES[t] for t in repo_topics], dtype=str),
        repo_topics=np.asarray([_TOPICS[t] for t in repo_topics], dtype=str),
        user_ids=USER_ID_BASE + np.arange(n_users, dtype=np.int64),
        logins=np.asarray([f"demo-user-{i}" for i in range(n_users)], dtype=str),
        star_user_ids=USER_ID_BASE + star_users,
        star_repo_ids=REPO_ID_BASE + star_repos,
        starred_at=times,
    )


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _to_datetime(value: np.datetime64) -> datetime:
    return value.astype("datetime64[us]").item().replace(tzinfo=UTC)


def clear_source(db: Database) -> None:
    for name in (REPOSITORIES, STARS, USERS):
        db[name].drop()
    db[META].delete_one({"_id": DATASET_DOC})


def write_source(db: Database, data: SourceData, *, layout: str = "stars", chunk: int = 20000) -> None:
    """Write the data into the (empty) source collections in the given layout."""
    stargazers: dict[int, list[int]] = {}
    if layout == "embedded":
        for user, repo in zip(data.star_user_ids.tolist(), data.star_repo_ids.tolist(), strict=True):
            stargazers.setdefault(repo, []).append(user)
    for part in _chunks(len(data.repo_ids), chunk):
        docs: list[dict[str, Any]] = []
        for j in range(part.start, part.stop):
            doc = {"_id": int(data.repo_ids[j]), "full_name": str(data.full_names[j]),
                   "stars": int(data.repo_stars[j]), "language": str(data.languages[j]) or None,
                   "topics": [str(data.repo_topics[j])] if data.repo_topics[j] else [],
                   "updated_at": datetime.now(UTC)}
            if layout == "embedded":
                doc["star_user_list"] = stargazers.get(int(data.repo_ids[j]), [])
            docs.append(doc)
        db[REPOSITORIES].insert_many(docs, ordered=False)
    for part in _chunks(len(data.user_ids), chunk):
        db[USERS].insert_many([{"_id": int(u), "login": str(login)}
                               for u, login in zip(data.user_ids[part], data.logins[part], strict=True)],
                              ordered=False)
    if layout == "stars":
        for part in _chunks(len(data.star_user_ids), chunk):
            times = data.starred_at[part]
            db[STARS].insert_many(
                [{"user_id": int(u), "repo_id": int(r), "starred_at": _to_datetime(t)}
                 for u, r, t in zip(data.star_user_ids[part].tolist(), data.star_repo_ids[part].tolist(),
                                    times, strict=True)],
                ordered=False)
    ensure_source_indexes(db, stars=layout == "stars")


def loaded_dataset(db: Database) -> dict[str, Any] | None:
    return db[META].find_one({"_id": DATASET_DOC})


def record_dataset(db: Database, data: SourceData, **fields: Any) -> dict[str, Any]:
    """Remember what the source collections hold (for idempotent loading and for the CLI)."""
    doc = {"_id": DATASET_DOC, **fields, "loaded_at": datetime.now(UTC),
           "repositories": len(data.repo_ids), "users": len(data.user_ids), "stars": len(data.star_user_ids)}
    if len(data.starred_at):
        doc["first_star"] = _to_datetime(data.starred_at.min())
        doc["last_star"] = _to_datetime(data.starred_at.max())
    db[META].replace_one({"_id": DATASET_DOC}, doc, upsert=True)
    return doc


def load_demo(db: Database, spec: DemoSpec | None = None, *, end: datetime | None = None,
              layout: str = "stars", replace: bool = False) -> dict[str, Any]:
    """Load the demo unless the same demo is loaded already (idempotent). Returns the dataset doc.

    Anything else in the source collections (another demo, an imported CSV) is replaced.
    """
    spec = spec or DemoSpec()
    wanted = {"source": "demo", "spec": asdict(spec), "layout": layout}
    current = loaded_dataset(db)
    if not replace and current and all(current.get(k) == v for k, v in wanted.items()):
        return {**current, "skipped": True}
    end = end or datetime.now(UTC)
    data = generate_demo(spec, end)
    clear_source(db)
    write_source(db, data, layout=layout)
    doc = record_dataset(db, data, **wanted, end=end)
    return {**doc, "skipped": False}
