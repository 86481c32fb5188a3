"""The values the assets hand each other. Each is stored in a typed format (npz arrays + JSON),
never pickled; see io_managers.py for the encoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp


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
    stars_after_window: int = 0   # well-formed stars left out because starred_at >= window_end


@dataclass
class UserItemMatrix:
    matrix: sp.csr_matrix         # users x items, binary float32
    user_ids: np.ndarray          # int64, row vocabulary
    item_ids: np.ndarray          # int64, column vocabulary (repo ids)
    dropped: dict[str, int] = field(default_factory=dict)  # what each filter dropped
    window_end: datetime | None = None
    item_names: np.ndarray | None = None  # str, full_name per column (same order as item_ids)
    window_start: datetime | None = None


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


@dataclass
class TrainedModel:
    """What `recvae_model` produced: the artifact in the blob store plus its evaluation."""

    file_name: str                # blob name, e.g. recvae_0.2154_2026-03-01T10_<run>.pt
    bucket: str                   # bucket (prod) or local folder (local)
    uri: str
    sha256: str
    size_bytes: int
    score: float                  # NDCG@100 on the held-out validation users
    metrics: dict[str, float]     # ndcg@100, recall@20, recall@50, ...
    popularity_metrics: dict[str, float]
    config: dict[str, Any]
    history: list[dict[str, float]]   # one row per epoch
    data_sizes: dict[str, int]        # users, items, nonzeros, train_users, validation_users
    training_seconds: float
    epochs: int
    window_end: datetime | None = None
    model_kind: str = "recvae"
    run_id: str = ""
    partition_key: str = ""
    window_start: datetime | None = None
    best_epoch: int = 0
    stop_reason: str = ""         # "epochs" | "patience" | "time_budget"
    code_version: str = ""
