"""The values the assets hand each other. Each is stored in a typed format (npz arrays + JSON),
never pickled; see defs/io_managers.py for the encoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from batchrec_dagster.registry.defaults import MODEL_KIND


class StoredValueNotFoundError(FileNotFoundError):
    """An asset partition was never materialized into this storage."""


@dataclass
class RawRepositories:
    """The catalogue and the star events of one partition, as columnar arrays."""

    repo_ids: np.ndarray          # int64, unique
    full_names: np.ndarray        # str, object array: each name at its own length (github.string_array)
    repo_stars: np.ndarray        # int64, GitHub star count
    languages: np.ndarray         # str, object array ("" when unknown)
    star_user_ids: np.ndarray     # int64
    star_repo_ids: np.ndarray     # int64, every one in repo_ids
    starred_at: np.ndarray        # datetime64[us], UTC; NaT in the legacy layout (no per-star time)
    window_start: datetime        # UTC, the partition's hour
    window_end: datetime          # UTC, exclusive: every star has starred_at < window_end
    layout: str                   # "stars" (event collection) or "embedded" (legacy star_user_list)
    skipped: dict[str, int] = field(default_factory=dict)  # malformed documents by reason
    # well-formed stars left out because starred_at >= window_end; None when the read was
    # incremental (a range query over the hour never sees them)
    stars_after_window: int | None = 0
    # Well-formed stars on repositories the catalogue lacks (counted as star_unknown_repo), kept
    # so that the next incremental hour takes them in once the catalogue knows their repository,
    # exactly as a full read would. int64 / int64 / datetime64[us]; None in values stored before.
    orphan_user_ids: np.ndarray | None = None
    orphan_repo_ids: np.ndarray | None = None
    orphan_starred_at: np.ndarray | None = None
    read_mode: str = "full"       # "full" (every star before window_end) | "incremental" (the hour's)
    source_fingerprint: str = ""  # what was read and how (snapshot.source_fingerprint)
    stars_read: int = 0           # star documents this read fetched from MongoDB


@dataclass
class UserItemMatrix:
    matrix: sp.csr_matrix         # users x items, binary float32
    user_ids: np.ndarray          # int64, row vocabulary
    item_ids: np.ndarray          # int64, column vocabulary (repo ids)
    dropped: dict[str, int] = field(default_factory=dict)  # what each filter dropped
    window_end: datetime | None = None
    item_names: np.ndarray | None = None  # str, full_name per column (same order as item_ids)
    window_start: datetime | None = None
    # datetime64[us] per row: the user's newest star (NaT without per-star times, None in values
    # stored before); a warm run trains the users whose stars changed since its starting model
    user_last_starred: np.ndarray | None = None


@dataclass
class VaeInput:
    train: sp.csr_matrix          # training users x items
    train_user_ids: np.ndarray
    item_ids: np.ndarray          # column vocabulary shared by every matrix here
    validation_user_ids: np.ndarray
    validation_fold_in: sp.csr_matrix   # 80% of each validation user's items, fed to the model
    validation_target: sp.csr_matrix    # the other 20%, scored
    seed: int = 0
    window_end: datetime | None = None
    item_names: np.ndarray | None = None  # str, full_name per column (same order as item_ids)
    window_start: datetime | None = None
    # held-out test users, split like the validation users: validation picks the epoch, the test
    # users give the model's own reported score (None in values stored before they existed)
    test_user_ids: np.ndarray | None = None
    test_fold_in: sp.csr_matrix | None = None
    test_target: sp.csr_matrix | None = None
    train_last_starred: np.ndarray | None = None  # per training row, as UserItemMatrix.user_last_starred


@dataclass
class TrainedModel:
    """What `recvae_model` produced: the artifact in the blob store plus its evaluation."""

    file_name: str                # blob name, e.g. recvae_0.2154_2026-03-01T10_<run>.pt
    bucket: str                   # bucket (prod) or local folder (local)
    uri: str
    sha256: str
    size_bytes: int
    score: float                  # NDCG@100 on the held-out test users (the model's own score)
    metrics: dict[str, float]     # ndcg@100, recall@20, recall@50, ... on the test users
    popularity_metrics: dict[str, float]  # the same on the same test users
    config: dict[str, Any]
    history: list[dict[str, float]]   # one row per epoch
    data_sizes: dict[str, int]        # users, items, nonzeros, train_users, validation_users
    training_seconds: float
    epochs: int
    window_end: datetime | None = None
    model_kind: str = MODEL_KIND
    run_id: str = ""
    partition_key: str = ""
    window_start: datetime | None = None
    best_epoch: int = 0
    stop_reason: str = ""         # "epochs" | "patience" | "time_budget"
    code_version: str = ""
    training_mode: str = "full"   # "full" (from scratch) | "warm" (continued a registered model)
    # why that mode, the model started from and the vocabulary mapping (warm_start.Start.record)
    training_start: dict[str, Any] = field(default_factory=dict)
    validation_score: float | None = None  # NDCG@100 of the best epoch on the validation users
    validation_metrics: dict[str, float] = field(default_factory=dict)
    # the approximate top-k index next to the artifact (defs/assets/ann_index.py); None: served exactly
    ann_index: dict[str, Any] | None = None
    # Adam's moments next to the artifact, for the next warm run (defs/assets/moments.py)
    training_checkpoint: dict[str, Any] | None = None
