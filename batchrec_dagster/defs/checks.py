"""Blocking asset checks: a bad matrix, a leaking split or a bad model is never registered.

Every check here is `blocking=True`: when it fails, the assets downstream of the checked asset do
not run in that run (Dagster skips their steps and the run fails), so `model_registry_entry`, the
only step that writes to the registry, never sees a model that failed a check. The run failure is
recorded by the run-failure sensor.

The rules are plain functions (`*_problems`, `baseline_margin`) that return what is wrong; the
Dagster checks wrap them. Thresholds are run config (dg.Config) whose defaults are settings
(BATCHREC_MIN_MATRIX_USERS, BATCHREC_MIN_MATRIX_ITEMS, BATCHREC_MAX_MATRIX_ITEMS,
BATCHREC_MAX_MATRIX_DENSITY, BATCHREC_MIN_SCORE_MARGIN, BATCHREC_ANN_MIN_RECALL; docs/settings.md),
resolved by the `run_defaults` resource. The checks are partitioned like their assets
(`build_checks(partitions)`): each checks one hour, and Dagit shows its result on that hour.
"""

# no `from __future__ import annotations`: Dagster reads the checks' parameter annotations
# (config classes, resources) at decoration time and cannot resolve them from strings.
import math
from typing import Any, ClassVar

import dagster as dg
import numpy as np
import scipy.sparse as sp
from pydantic import Field

from batchrec_dagster.defs.assets.common import Hourly, with_run_defaults
from batchrec_dagster.defs.assets.metadata import rounded
from batchrec_dagster.defs.resources import ArtifactStoreResource, RunDefaults
from batchrec_dagster.registry.defaults import SCORE_METRIC
from batchrec_dagster.storage.blobs import BlobNotFoundError, mismatches
from batchrec_dagster.storage.values import TrainedModel, UserItemMatrix, VaeInput

# --------------------------------------------------------------------------- rules


def _ids_problems(label: str, ids: np.ndarray, expected: int) -> list[str]:
    problems = []
    if len(ids) != expected:
        problems.append(f"{label}: {len(ids)} ids for {expected} rows/columns")
    if len(np.unique(ids)) != len(ids):
        problems.append(f"{label}: ids are not unique")
    return problems


def matrix_problems(value: UserItemMatrix, *, min_users: int, min_items: int, max_items: int,
                    max_density: float) -> list[str]:
    """Why the user x item matrix must not be trained on; empty when it is fine."""
    m = value.matrix
    users, items = m.shape
    problems: list[str] = []
    if m.nnz == 0:
        problems.append("the matrix has no interactions")
    if users < min_users:
        problems.append(f"{users} users, fewer than the minimum {min_users}")
    if items < min_items:
        problems.append(f"{items} items, fewer than the minimum {min_items}")
    if items > max_items:
        problems.append(f"{items} items, more than the maximum {max_items} (the decoder is dense in items)")
    problems += _ids_problems("user_ids", value.user_ids, users)
    problems += _ids_problems("item_ids", value.item_ids, items)
    if m.nnz:
        data = np.asarray(m.data)
        if not np.all(np.isfinite(data)):
            problems.append("the matrix holds NaN or infinite values")
        elif not np.all(data == 1):
            problems.append("the matrix is not binary")
        density = m.nnz / (users * items)
        if density > max_density:
            problems.append(f"density {density:.3f} exceeds {max_density} (duplicated or exploded stars?)")
        empty_rows = int((np.diff(m.tocsr().indptr) == 0).sum())
        if empty_rows:
            problems.append(f"{empty_rows} users have no items")
    return problems


def _row_sets(matrix: sp.csr_matrix) -> sp.csr_matrix:
    matrix = matrix.tocsr().copy()
    matrix.data = np.ones_like(matrix.data)
    return matrix


def _overlap_problems(groups: dict[str, np.ndarray]) -> list[str]:
    problems = []
    names = list(groups)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            overlap = np.intersect1d(groups[first], groups[second])
            if len(overlap):
                problems.append(f"{len(overlap)} users are both {first} and {second} users "
                                f"(e.g. {overlap[:5].tolist()})")
    return problems


def _test_problems(value: VaeInput) -> list[str]:
    """The test users (absent from values stored before they existed) are held out like validation's."""
    if value.test_user_ids is None:
        return []
    n_test, n_items = len(value.test_user_ids), len(value.item_ids)
    problems = []
    for name, matrix in (("test_fold_in", value.test_fold_in), ("test_target", value.test_target)):
        if matrix is None or matrix.shape != (n_test, n_items):
            shape = getattr(matrix, "shape", None)
            problems.append(f"{name} has shape {shape}, expected {(n_test, n_items)}")
    if not problems and _row_sets(value.test_fold_in).multiply(_row_sets(value.test_target)).nnz:
        problems.append("test users have items both folded in and scored")
    return problems


def leakage_problems(value: VaeInput) -> list[str]:
    """Why training, validation and test are not independent; empty when they are."""
    n_items = len(value.item_ids)
    groups = {"training": value.train_user_ids, "validation": value.validation_user_ids}
    if value.test_user_ids is not None:
        groups["test"] = value.test_user_ids
    problems = _overlap_problems(groups) + _test_problems(value)
    if value.train.shape[0] != len(value.train_user_ids):
        problems.append(f"train has {value.train.shape[0]} rows for {len(value.train_user_ids)} users")
    if value.train.nnz == 0:
        problems.append("train has no interactions")
    n_val = len(value.validation_user_ids)
    shapes_ok = True
    for name, matrix in (("validation_fold_in", value.validation_fold_in),
                         ("validation_target", value.validation_target)):
        if matrix.shape != (n_val, n_items):
            shapes_ok = False
            problems.append(f"{name} has shape {matrix.shape}, expected {(n_val, n_items)}")
    if value.train.shape[1] != n_items:
        problems.append(f"train has {value.train.shape[1]} columns for {n_items} items")
    if shapes_ok:
        shared = _row_sets(value.validation_fold_in).multiply(_row_sets(value.validation_target)).nnz
        if shared:
            problems.append(f"{shared} held-out (user, item) pairs are both folded in and scored")
    if n_val == 0:
        problems.append("there are no validation users")
    elif value.validation_target.nnz == 0:
        problems.append("no validation user has a held-out item to score")
    return problems


def baseline_margin(model: TrainedModel, metric: str = SCORE_METRIC) -> tuple[float, float, list[str]]:
    """(model score, popularity score, problems) on the same held-out users."""
    problems: list[str] = []
    score = float(model.metrics.get(metric, model.score))
    baseline = model.popularity_metrics.get(metric)
    if baseline is None:
        problems.append(f"the popularity baseline has no {metric}")
        baseline = math.nan
    baseline = float(baseline)
    if not math.isfinite(score):
        problems.append(f"the model's {metric} is {score}")
    users, baseline_users = model.metrics.get("users"), model.popularity_metrics.get("users")
    if users is not None and baseline_users is not None and int(users) != int(baseline_users):
        problems.append(f"model scored on {int(users)} users, popularity on {int(baseline_users)}: "
                        "not the same held-out users")
    return score, baseline, problems


# --------------------------------------------------------------------------- config


class MatrixBoundsConfig(dg.Config):
    SETTINGS_DEFAULTS: ClassVar[dict[str, str]] = {
        "min_users": "min_matrix_users", "min_items": "min_matrix_items", "max_items": "max_matrix_items",
        "max_density": "max_matrix_density"}

    min_users: int | None = Field(default=None, ge=1, description="Default: BATCHREC_MIN_MATRIX_USERS.")
    min_items: int | None = Field(default=None, ge=1, description="Default: BATCHREC_MIN_MATRIX_ITEMS.")
    max_items: int | None = Field(default=None, ge=1, description="Default: BATCHREC_MAX_MATRIX_ITEMS.")
    max_density: float | None = Field(default=None, gt=0, le=1,
                                      description="Default: BATCHREC_MAX_MATRIX_DENSITY.")


class BaselineMarginConfig(dg.Config):
    SETTINGS_DEFAULTS: ClassVar[dict[str, str]] = {"min_margin": "min_score_margin"}

    min_margin: float | None = Field(
        default=None,
        description="The model's NDCG@100 must exceed popularity's by more than this (may be negative). "
                    "Default: BATCHREC_MIN_SCORE_MARGIN.")


class IndexRecallConfig(dg.Config):
    SETTINGS_DEFAULTS: ClassVar[dict[str, str]] = {"min_recall": "ann_min_recall"}

    min_recall: float | None = Field(
        default=None, ge=0, le=1,
        description="The approximate top-k index's recall@k against exact scoring on held-out users "
                    "must reach this. Default: BATCHREC_ANN_MIN_RECALL.")


class ArtifactCheckConfig(dg.Config):
    load: bool = Field(default=True, description="Also parse the artifact (safetensors + JSON, no pickle).")


# --------------------------------------------------------------------------- checks


def _result(context: dg.AssetCheckExecutionContext, problems: list[str], metadata: dict[str, Any],
            ok: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) if problems else ok,
        metadata={"partition": context.partition_key, **rounded(metadata),
                  "problems": dg.MetadataValue.json(problems)},
    )


def hourly_check(**kwargs: Any) -> Any:
    """`dg.asset_check`, blocking, on the hourly partitions of its asset (given at `build`), its
    thresholds resolved against the settings (with_run_defaults)."""
    return lambda compute: Hourly(dg.asset_check, with_run_defaults(compute), {"blocking": True, **kwargs})


@hourly_check(asset="user_item_matrix",
              description="Non-empty, binary, ids consistent, within the configured size and density.")
def user_item_matrix_is_sane(context: dg.AssetCheckExecutionContext, config: MatrixBoundsConfig,
                             run_defaults: RunDefaults,
                             user_item_matrix: UserItemMatrix) -> dg.AssetCheckResult:
    users, items = user_item_matrix.matrix.shape
    problems = matrix_problems(user_item_matrix, min_users=config.min_users, min_items=config.min_items,
                               max_items=config.max_items, max_density=config.max_density)
    return _result(context, problems, {"users": users, "items": items,
                              "nonzeros": int(user_item_matrix.matrix.nnz)},
                   f"{users} users x {items} items")


@hourly_check(asset="vae_input",
              description="Training, validation and test users are disjoint; held-out items are not "
                          "folded in.")
def vae_input_has_no_leakage(context: dg.AssetCheckExecutionContext,
                             vae_input: VaeInput) -> dg.AssetCheckResult:
    problems = leakage_problems(vae_input)
    return _result(context, problems, {"train_users": len(vae_input.train_user_ids),
                              "validation_users": len(vae_input.validation_user_ids)},
                   "train and validation are disjoint")


@hourly_check(asset="recvae_model",
              description="NDCG@100 beats popularity on the same held-out users by the margin.")
def recvae_model_beats_popularity(context: dg.AssetCheckExecutionContext, config: BaselineMarginConfig,
                                  run_defaults: RunDefaults,
                                  recvae_model: TrainedModel) -> dg.AssetCheckResult:
    score, baseline, problems = baseline_margin(recvae_model)
    if not problems and not score - baseline > config.min_margin:
        problems.append(f"{SCORE_METRIC} {score:.4f} does not beat popularity {baseline:.4f} "
                        f"by more than {config.min_margin}")
    return _result(context, problems, {"score": score, "popularity": baseline,
                              "margin": score - baseline, "min_margin": config.min_margin},
                   f"{SCORE_METRIC} {score:.4f} vs popularity {baseline:.4f}")


@hourly_check(asset="recvae_model",
              description="The uploaded artifact reads back with the recorded size and sha256.")
def recvae_model_artifact_verifies(context: dg.AssetCheckExecutionContext, config: ArtifactCheckConfig,
                                   artifact_store: ArtifactStoreResource,
                                   recvae_model: TrainedModel) -> dg.AssetCheckResult:
    store = artifact_store.get_store()
    try:
        data = store.read(recvae_model.file_name)
    except BlobNotFoundError as exc:
        return _result(context, [str(exc)], {"uri": recvae_model.uri}, "")
    problems = mismatches(data, size_bytes=recvae_model.size_bytes, sha256=recvae_model.sha256)
    if not problems and config.load:
        from recvae import ArtifactError, load_artifact  # torch import only when the check runs

        try:
            load_artifact(data, device="cpu")
        except ArtifactError as exc:
            problems.append(f"the artifact does not load: {exc}")
    return _result(context, problems, {"uri": recvae_model.uri,
                              "sha256": recvae_model.sha256, "size_bytes": len(data)},
                   f"{recvae_model.uri} verified")


def index_recall_problems(record: dict[str, Any] | None, min_recall: float) -> list[str]:
    """Why the model's top-k index must not be served; empty when it is fine or there is none
    (a catalog below the switch-over is served exactly)."""
    if record is None:
        return []
    recall, k = record.get("recall"), record.get("recall_k")
    if recall is None:
        return [f"the index's recall@{k} could not be measured: no held-out user has a folded-in item"]
    if not recall >= min_recall:
        return [f"the {record.get('kind')} index's recall@{k} against exact scoring is {recall:.4f}, "
                f"below the floor {min_recall} (raise BATCHREC_ANN_EF_SEARCH or use another index type)"]
    return []


@hourly_check(asset="recvae_model",
              description="The approximate top-k index finds, on held-out users, at least the floor's "
                          "share of the exact top-k (recall@k); no index: served exactly.")
def recvae_model_index_recall(context: dg.AssetCheckExecutionContext, config: IndexRecallConfig,
                              run_defaults: RunDefaults, recvae_model: TrainedModel) -> dg.AssetCheckResult:
    record = recvae_model.ann_index
    problems = index_recall_problems(record, config.min_recall)
    metadata: dict[str, Any] = {"min_recall": config.min_recall}
    if record is not None:
        metadata.update(recall=float(record["recall"]) if record.get("recall") is not None else -1.0,
                        k=int(record["recall_k"]), users=int(record["recall_users"]), kind=record["kind"])
    ok = ("no index: the catalog is served exactly" if record is None or problems
          else f"recall@{record['recall_k']} {record['recall']:.4f} >= {config.min_recall}")
    return _result(context, problems, metadata, ok)


CHECKS = (user_item_matrix_is_sane, vae_input_has_no_leakage, recvae_model_beats_popularity,
          recvae_model_artifact_verifies, recvae_model_index_recall)


def build_checks(partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The blocking checks, partitioned like the assets they check."""
    return [check.build(partitions) for check in CHECKS]
