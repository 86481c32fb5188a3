"""Top-k recommendations outside the server (`batchrec recommend`, `batchrec demo`).

The model is the one to serve (champions.serving_order: the pin, else the champion chosen on
comparable scores), and a model whose artifact is missing, does not verify or does not load is
passed over (and reported) for the next one in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from batchrec_dagster.cli.errors import RecommendError
from batchrec_dagster.registry.champions import serving_order
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.sources.collections import repo_id_by_name, starred_repo_ids
from batchrec_dagster.storage.blobs import BlobStore, read_verified
from recvae import Artifact, load_artifact


@dataclass
class Recommendations:
    entry: dict[str, Any]
    rows: list[dict[str, Any]]
    input_items: int
    known_items: int
    passed_over: list[str] = field(default_factory=list)  # candidates that failed, and why
    unknown_repos: list[str] = field(default_factory=list)  # --repos names MongoDB does not know


def load_served_model(db: Database, store: BlobStore, policy: SelectionPolicy
                      ) -> tuple[dict[str, Any], Artifact, list[str]]:
    """The best candidate that loads, with the reasons the better-ranked ones did not."""
    failures: list[str] = []
    for entry in serving_order(db, policy, limit=10):
        name = entry.get("file_name")
        try:
            if not isinstance(name, str):
                raise ValueError(f"file_name is {type(name).__name__}, not a string")
            data = read_verified(store, name, size_bytes=entry.get("size_bytes"), sha256=entry.get("sha256"))
            return entry, load_artifact(data, device="cpu"), failures
        except Exception as exc:  # missing, mismatched, unreadable: the next candidate may serve
            failures.append(f"{entry.get('_id')} ({name!r}): {exc}")
    detail = f"; passed over: {'; '.join(failures)}" if failures else ""
    raise RecommendError(f"no model trained on data from the last {policy.max_age_hours:g} h can be "
                         f"served; run `batchrec materialize` (or `batchrec demo`) first{detail}")


def input_repo_ids(db: Database, *, login: str | None, repos: list[str]) -> tuple[list[int], list[str]]:
    """The repositories a login starred, or the given ids / owner/name tokens; and the names that
    no repository in MongoDB has (reported and skipped, as the API and the page do)."""
    if login is not None:
        starred = starred_repo_ids(db, login)
        if starred is None:
            raise RecommendError(f"no user with login {login!r} in {db.name}")
        return starred, []
    ids: list[int] = []
    unknown: list[str] = []
    for token in repos:
        if token.lstrip("-").isdigit():
            ids.append(int(token))
            continue
        repo_id = repo_id_by_name(db, token)
        if repo_id is None:
            unknown.append(token)
        else:
            ids.append(repo_id)
    return ids, unknown


def recommend(db: Database, store: BlobStore, *, login: str | None = None, repos: list[str] | None = None,
              k: int = 10, policy: SelectionPolicy) -> Recommendations:
    """Top-k from the served model for a user (by login) or a set of repositories."""
    entry, artifact, passed_over = load_served_model(db, store, policy)
    starred, unknown = input_repo_ids(db, login=login, repos=repos or [])
    recommender = artifact.recommender
    names = artifact.extra.get("item_names") or [str(i) for i in recommender.item_ids]
    known = [int(c) for c in recommender.index_of(starred) if c >= 0]
    indices, scores = recommender.recommend([known], k)
    rows = [{"rank": r + 1, "repo_id": int(recommender.item_ids[i]), "full_name": names[i], "score": float(s)}
            for r, (i, s) in enumerate(zip(indices[0], scores[0], strict=True)) if i >= 0]
    return Recommendations(entry, rows, len(starred), len(known), passed_over, unknown)
