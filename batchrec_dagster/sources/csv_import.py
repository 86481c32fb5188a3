"""Import a real stars CSV into the source collections (replacing what they hold).

Accepted layouts (by header):
- `user,repo[,starred_at]`: user = GitHub user id or login, repo = repository id or `owner/name`,
  starred_at = ISO 8601 (UTC when no offset is given).
- `user,project,has_star` (the shared github-stars-tiny dataset): integer user and repository
  indexes; rows with has_star != 1 are not stars. An optional repos CSV `index,name` gives names.

Files without times get synthetic `starred_at` values spread uniformly over `spread_days` before
`time_end`, so a partition whose window ends at or after `time_end` sees every star. The `stars`
field of a repository (its GitHub star count) is unknown in a CSV; its number of stargazers in
the file is used instead. Malformed rows and duplicate (user, repo) pairs are skipped and counted.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pymongo.database import Database

from batchrec_dagster.sources.demo_data import SourceData, clear_source, record_dataset, write_source
from batchrec_dagster.sources.github_ids import is_github_id, string_array

USER_HEADERS = ("user", "user_id", "login")
REPO_HEADERS = ("repo", "repo_id", "repository", "full_name", "project")


class CsvFormatError(ValueError):
    """The CSV does not have a layout this importer understands."""


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _bad_id(text: str) -> bool:
    """An integer that is not an id (github.is_github_id): skipped here, as the pipeline would."""
    return _is_int(text) and not is_github_id(int(text))


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _read_repo_names(path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:2] != ["index", "name"]:
            raise CsvFormatError(f"{path}: expected the header `index,name`, got {','.join(header)}")
        for row in reader:
            if len(row) >= 2 and _is_int(row[0]) and row[1].strip():
                names[int(row[0])] = row[1].strip()
    return names


def _ids(values: list[str], kind: str) -> tuple[np.ndarray, dict[int, str] | None]:
    """Integer ids as they are, or names mapped to ids 1..n in sorted order (with id -> name)."""
    if all(_is_int(v) for v in values):
        return np.asarray([int(v) for v in values], dtype=np.int64), None
    names = sorted(set(values))
    index = {name: i + 1 for i, name in enumerate(names)}
    return np.asarray([index[v] for v in values], dtype=np.int64), {i: n for n, i in index.items()}


def read_stars_csv(stars_csv: Path, repos_csv: Path | None = None, *, time_end: datetime,
                   spread_days: float = 7.0, seed: int = 0) -> tuple[SourceData, dict[str, int]]:
    """Parse the CSV into source columns plus the count of skipped rows by reason."""
    skipped: Counter = Counter()
    users: list[str] = []
    repos: list[str] = []
    times: list[datetime] = []
    with open(stars_csv, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if len(header) < 2 or header[0] not in USER_HEADERS or header[1] not in REPO_HEADERS:
            raise CsvFormatError(f"{stars_csv}: expected a header `user,repo[,starred_at]` or "
                                 f"`user,project,has_star`, got `{','.join(header)}`")
        shared_layout = "has_star" in header
        has_times = "starred_at" in header
        time_col = header.index("starred_at") if has_times else None
        star_col = header.index("has_star") if shared_layout else None
        width = len(header)
        for row in reader:
            if len(row) < width or not row[0].strip() or not row[1].strip():
                skipped["bad_row"] += 1
                continue
            if star_col is not None and row[star_col].strip() != "1":
                skipped["not_starred"] += 1
                continue
            if _bad_id(row[0]) or _bad_id(row[1]):
                skipped["bad_user_id" if _bad_id(row[0]) else "bad_repo_id"] += 1
                continue
            if time_col is not None:
                when = _parse_time(row[time_col])
                if when is None:
                    skipped["bad_starred_at"] += 1
                    continue
                times.append(when)
            users.append(row[0].strip())
            repos.append(row[1].strip())
    if not users:
        raise CsvFormatError(f"{stars_csv}: no valid star rows (skipped: {dict(skipped)})")

    user_ids, logins = _ids(users, "user")
    repo_ids, repo_names = _ids(repos, "repo")
    if repo_names is None:
        given = _read_repo_names(repos_csv) if repos_csv else {}
        repo_names = {int(r): given.get(int(r), f"repo-{int(r)}") for r in np.unique(repo_ids)}

    # de-duplicate (user, repo), keeping the first row of each pair
    pairs = user_ids.astype(np.int64) * (int(repo_ids.max()) + 1) + repo_ids
    _, first = np.unique(pairs, return_index=True)
    first.sort()
    if len(first) < len(pairs):
        skipped["duplicate"] += len(pairs) - len(first)
    user_ids, repo_ids = user_ids[first], repo_ids[first]

    if has_times:
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        micros = np.asarray([(t - epoch) // timedelta(microseconds=1) for t in times], dtype=np.int64)[first]
    else:
        rng = np.random.default_rng(seed)
        end_us = (time_end.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        micros = end_us - 1 - rng.integers(0, int(spread_days * 86_400e6), len(user_ids))
    catalogue = np.unique(repo_ids)
    stargazers = np.bincount(np.searchsorted(catalogue, repo_ids), minlength=len(catalogue))
    all_users = np.unique(user_ids)
    if logins is not None:
        login_col = [logins[int(u)] for u in all_users]
    else:
        login_col = [f"user-{int(u)}" for u in all_users]
    data = SourceData(
        repo_ids=catalogue,
        full_names=string_array([repo_names[int(r)] for r in catalogue]),
        repo_stars=stargazers.astype(np.int64),
        languages=np.full(len(catalogue), "", dtype=str),
        repo_topics=np.full(len(catalogue), "", dtype=str),
        user_ids=all_users,
        logins=np.asarray(login_col, dtype=str),
        star_user_ids=user_ids,
        star_repo_ids=repo_ids,
        starred_at=micros.astype("datetime64[us]"),
    )
    return data, dict(sorted(skipped.items()))


def import_csv(db: Database, stars_csv: str | Path, repos_csv: str | Path | None = None, *,
               time_end: datetime | None = None, spread_days: float = 7.0,
               layout: str = "stars") -> dict[str, Any]:
    """Replace the source collections with the CSV's stars. Returns the dataset document."""
    stars_csv = Path(stars_csv)
    repos_csv = Path(repos_csv) if repos_csv else None
    time_end = time_end or datetime.now(UTC)
    if time_end.tzinfo is None:
        raise ValueError("time_end must be timezone-aware")
    data, skipped = read_stars_csv(stars_csv, repos_csv, time_end=time_end, spread_days=spread_days)
    clear_source(db)
    write_source(db, data, layout=layout)
    return record_dataset(db, data, source="csv", path=str(stars_csv.resolve()),
                          repos_path=str(repos_csv.resolve()) if repos_csv else None,
                          layout=layout, skipped=skipped, time_end=time_end)
