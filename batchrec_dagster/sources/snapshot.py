"""The star snapshot of an hour, and how the next hour extends it instead of re-reading everything.

`raw_repositories` of hour H is a snapshot: every star with starred_at before H's end, in columnar
arrays (types.RawRepositories). Hour H+1 can be read *incrementally*: the catalogue again (it is
small, and re-reading it whole also sees deletions and changed star counts), only the stars whose
starred_at falls in H+1 (a range query on the starred_at index), merged into H's snapshot here. The
result is what a full read would have returned at the time, with three exceptions that the daily
full read (BATCHREC_FULL_RUN_HOUR) reconciles: stars deleted or changed in MongoDB after the
snapshot was taken, stars inserted late with a starred_at in an hour already read, and documents
whose starred_at is not a date (a range query cannot return them, so only full reads count them).

`plan_read` decides full or incremental; a snapshot only extends to the next hour when it was read
from the same source with the same layout and format (`source_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urlsplit

import numpy as np

from batchrec_dagster.storage.values import RawRepositories

# Bump when the meaning of a stored snapshot changes: older snapshots then get a full read.
SNAPSHOT_FORMAT = 1
# Star reasons that the catalogue does not decide: carried from snapshot to snapshot.
_RECOUNTED = {"star_unknown_repo", "star_duplicate"}


@dataclass(frozen=True)
class ReadPlan:
    mode: str    # "full" | "incremental"
    reason: str


@dataclass
class StarColumns:
    """Star events as three aligned arrays (ids int64, times datetime64[us] UTC)."""

    user_ids: np.ndarray
    repo_ids: np.ndarray
    starred_at: np.ndarray

    @classmethod
    def empty(cls) -> StarColumns:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, "datetime64[us]"))

    def __len__(self) -> int:
        return len(self.user_ids)

    def select(self, mask: np.ndarray) -> StarColumns:
        return StarColumns(self.user_ids[mask], self.repo_ids[mask], self.starred_at[mask])

    @staticmethod
    def concat(*parts: StarColumns) -> StarColumns:
        return StarColumns(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("user_ids", "repo_ids", "starred_at")))


def source_fingerprint(*, layout: str, database: str, uri: str | None,
                       embedded_data_dir: str | None) -> str:
    """Identifies where and how a snapshot was read: snapshot format, layout, database, and the
    MongoDB hosts (never the credentials) or the embedded server's data folder."""
    if uri:
        parts = urlsplit(uri)
        where = [parts.scheme, *sorted(parts.netloc.rpartition("@")[2].split(","))]
    else:
        where = ["embedded", str(embedded_data_dir or "")]
    identity = {"format": SNAPSHOT_FORMAT, "layout": layout, "database": database, "where": where}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def plan_read(previous: RawRepositories | None, *, missing: str = "", window_start: datetime,
              layout: str, fingerprint: str, requested: str, daily_full: str | None) -> ReadPlan:
    """Full or incremental, and why. `missing`: why there is no previous snapshot; `daily_full`:
    the reason text when this hour is the daily full run, else None."""
    if requested == "full":
        return ReadPlan("full", "asked in run config (read: full)")
    if layout != "stars":
        return ReadPlan("full", f"the {layout} layout has no per-star times to select an hour by")
    if daily_full:
        return ReadPlan("full", daily_full)
    if previous is None:
        return ReadPlan("full", missing or "no snapshot of the previous hour")
    if previous.source_fingerprint != fingerprint:
        return ReadPlan("full", f"the previous hour's snapshot was read from another source, layout or "
                                f"snapshot format (fingerprint {previous.source_fingerprint or 'none'}, "
                                f"now {fingerprint})")
    if previous.window_end != window_start:
        return ReadPlan("full", f"the previous snapshot ends at {previous.window_end.isoformat()}, not "
                                f"at this hour's start {window_start.isoformat()}")
    return ReadPlan("incremental", f"extends the previous hour's snapshot ({len(previous.star_user_ids)} "
                                   f"stars, read {previous.read_mode})")


def dedupe_pairs(stars: StarColumns) -> tuple[StarColumns, int]:
    """Keep the earliest event per (user, repo), sorted by user, repo; returns how many were dropped."""
    if len(stars) == 0:
        return stars, 0
    # lexsort's last key is the primary one: user, then repo, then time (NaT sorts last)
    order = np.lexsort((stars.starred_at, stars.repo_ids, stars.user_ids))
    u, r = stars.user_ids[order], stars.repo_ids[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (r[1:] != r[:-1])
    kept = StarColumns(u[first], r[first], stars.starred_at[order][first])
    return kept, int(len(u) - first.sum())


def _orphans(snapshot: RawRepositories) -> StarColumns:
    if snapshot.orphan_user_ids is None:
        return StarColumns.empty()
    return StarColumns(snapshot.orphan_user_ids, snapshot.orphan_repo_ids, snapshot.orphan_starred_at)


def sort_stars(repo_ids: np.ndarray, stars: StarColumns) -> tuple[StarColumns, StarColumns, int]:
    """Stars on catalogue repositories (de-duplicated, earliest kept, sorted by user and repo), the
    orphans (well-formed stars on repositories the catalogue lacks), and how many duplicates went."""
    known = np.isin(stars.repo_ids, repo_ids)
    kept, duplicates = dedupe_pairs(stars.select(known))
    return kept, stars.select(~known), duplicates


def _pair_keys(catalogue: np.ndarray, stars: StarColumns) -> np.ndarray | None:
    """One int64 per (user, repo) that sorts as (user, repo id) does: user * n + the repo's rank in
    the sorted `catalogue`. None when a repository is not in it, a user id is negative or the key
    could overflow."""
    n = len(catalogue)
    if len(stars) == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 0 or stars.user_ids.min() < 0 or stars.user_ids.max() > (np.iinfo(np.int64).max - n) // n:
        return None
    rank = np.searchsorted(catalogue, stars.repo_ids)
    if np.any(catalogue[np.minimum(rank, n - 1)] != stars.repo_ids):
        return None
    return stars.user_ids * n + rank


def merge_sorted(repo_ids: np.ndarray, carried: StarColumns, added: StarColumns
                 ) -> tuple[StarColumns, StarColumns, int]:
    """`sort_stars(repo_ids, carried + added)` where `carried` is a previous result of sort_stars
    (de-duplicated and sorted by user and repo): only `added` is sorted, and it is inserted into
    `carried` by binary search, so an hour costs a pass over the snapshot rather than a sort of it.
    Falls back to sorting everything when `carried` is not such a result against this catalogue (a
    repository left it, or the pair keys would overflow)."""
    catalogue = np.sort(repo_ids)
    new, orphans, duplicates = sort_stars(catalogue, added)
    carried_keys, new_keys = _pair_keys(catalogue, carried), _pair_keys(catalogue, new)
    if carried_keys is None or new_keys is None or np.any(carried_keys[1:] <= carried_keys[:-1]):
        return sort_stars(repo_ids, StarColumns.concat(carried, added))
    at = np.searchsorted(carried_keys, new_keys)
    present = np.zeros(len(new), dtype=bool)
    inside = at < len(carried_keys)
    present[inside] = carried_keys[at[inside]] == new_keys[inside]
    times = carried.starred_at
    earlier = present.copy()
    earlier[present] = new.starred_at[present] < times[at[present]]  # keep the earliest, as sort does
    earlier[present] |= np.isnat(times[at[present]]) & ~np.isnat(new.starred_at[present])
    if earlier.any():
        times = times.copy()
        times[at[earlier]] = new.starred_at[earlier]
    fresh = ~present
    merged = StarColumns(np.insert(carried.user_ids, at[fresh], new.user_ids[fresh]),
                         np.insert(carried.repo_ids, at[fresh], new.repo_ids[fresh]),
                         np.insert(times, at[fresh], new.starred_at[fresh]))
    return merged, orphans, duplicates + int(present.sum())


def with_stars(catalogue: RawRepositories, stars: StarColumns, orphans: StarColumns,
               skipped: Counter, **fields: object) -> RawRepositories:
    """`catalogue` (a read's catalogue arrays, window and counters) with these stars and orphans."""
    skipped["star_unknown_repo"] = len(orphans)
    return replace(catalogue, star_user_ids=stars.user_ids, star_repo_ids=stars.repo_ids,
                   starred_at=stars.starred_at, orphan_user_ids=orphans.user_ids,
                   orphan_repo_ids=orphans.repo_ids, orphan_starred_at=orphans.starred_at,
                   skipped=dict(sorted((k, v) for k, v in skipped.items() if v)), **fields)


def merge_hour(previous: RawRepositories, catalogue: RawRepositories, hour: StarColumns,
               hour_skipped: Counter) -> RawRepositories:
    """The previous snapshot's stars and orphans plus the hour's well-formed stars, sorted against
    this read's catalogue as a full read would sort them. Counters of malformed stars carry over
    (each document is read once); the catalogue's are this read's own."""
    carried = StarColumns(previous.star_user_ids, previous.star_repo_ids, previous.starred_at)
    stars, orphans, duplicates = merge_sorted(catalogue.repo_ids, carried,
                                              StarColumns.concat(_orphans(previous), hour))
    skipped = Counter({k: v for k, v in previous.skipped.items()
                       if k.startswith("star_") and k not in _RECOUNTED})
    skipped.update({k: v for k, v in catalogue.skipped.items() if not k.startswith("star_")})
    skipped.update(hour_skipped)
    skipped["star_duplicate"] = previous.skipped.get("star_duplicate", 0) + duplicates
    return with_stars(catalogue, stars, orphans, skipped, stars_after_window=None,
                      read_mode="incremental")
