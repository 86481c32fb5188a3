"""recvae_model: train RecVAE, score it against popularity, write the artifact (write-once)."""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import scipy.sparse as sp

from batchrec_dagster.defs.assets.ann_index import build_and_store, index_metadata
from batchrec_dagster.defs.assets.common import code_version, hourly_asset
from batchrec_dagster.defs.assets.config import TrainingConfig
from batchrec_dagster.defs.assets.metadata import (
    learning_curve_metadata,
    location_metadata,
    md_table,
    window_metadata,
)
from batchrec_dagster.defs.assets.moments import load_moments, store_moments
from batchrec_dagster.defs.partitions import daily_full_run, partition_window
from batchrec_dagster.defs.resources import ArtifactStoreResource, MongoResource, RunDefaults
from batchrec_dagster.registry.defaults import MODEL_KIND, SCORE_METRIC
from batchrec_dagster.storage.blobs import BlobExistsError, BlobStore, StoredBlob, probe_write
from batchrec_dagster.storage.values import TrainedModel, VaeInput
from batchrec_dagster.training.k8s_resources import TRAINING_POOL
from batchrec_dagster.training.start import Start, choose_start
from recvae import (
    EpochReport,
    HeldOut,
    Popularity,
    Recommender,
    TrainResult,
    dump_artifact,
    evaluate,
    train_recvae,
    train_warm,
)


def artifact_name(score: float, partition_key: str, run_id: str, attempt: int = 0) -> str:
    """`recvae_<score>_<partition>_<run>.pt`, as the original system named its models, plus the
    partition and run so that every run writes its own object."""
    hour = partition_key.replace(":", "")
    suffix = f"_{attempt}" if attempt else ""
    return f"{MODEL_KIND}_{score:.4f}_{hour}_{run_id[:8]}{suffix}.pt"


def put_artifact(store: BlobStore, data: bytes, score: float, partition_key: str, run_id: str) -> StoredBlob:
    """Write under a fresh name; a retried step of the same run gets a suffix, never an overwrite."""
    for attempt in range(100):
        try:
            return store.put_new(artifact_name(score, partition_key, run_id, attempt), data)
        except BlobExistsError:
            continue
    raise BlobExistsError(f"100 artifacts already exist for run {run_id} and partition {partition_key}")


def preview_table(recommender: Recommender, data: VaeInput, k: int) -> dg.MetadataValue:
    """Top-k repositories for the first validation user, marking the held-out ones it found."""
    fold_in = data.validation_fold_in[:1]
    target = set(data.validation_target[:1].indices.tolist())
    indices, scores = recommender.recommend(fold_in, k)
    names = data.item_names if data.item_names is not None else data.item_ids.astype(str)
    rows = [(rank + 1, names[i], float(s), "yes" if int(i) in target else "")
            for rank, (i, s) in enumerate(zip(indices[0], scores[0], strict=True)) if i >= 0]
    starred = ", ".join(str(names[i]) for i in fold_in.indices[:5])
    table = md_table(["rank", "repository", "score", "held-out star"], rows)
    return dg.MetadataValue.md(
        f"Validation user {int(data.validation_user_ids[0])} starred {fold_in.nnz} repositories "
        f"fed to the model (e.g. {starred}); {len(target)} more were held out.\n\n{table.value}")


def changed_users(data: VaeInput, start: Start) -> np.ndarray | None:
    """Training rows with a star newer than the starting model's data (None: unknown, so a warm
    epoch trains every user: values stored before star times were kept, or the legacy layout)."""
    last = data.train_last_starred
    if last is None or start.source is None or np.isnat(last).all():
        return None
    data_end = datetime.fromisoformat(start.source["data_end"])
    if data_end.tzinfo is not None:  # stored in UTC; compared with the UTC star times as naive
        data_end = data_end.astimezone(UTC).replace(tzinfo=None)
    since = np.datetime64(data_end, "us")
    return np.flatnonzero(~np.isnat(last) & (last >= since))


def _held_out_fold_in(data: VaeInput) -> sp.csr_matrix:
    """The users the index's recall is measured on: test users (validation users when absent)."""
    return data.test_fold_in if data.test_fold_in is not None else data.validation_fold_in


def _rows(matrix: sp.csr_matrix | None) -> int:
    return int(matrix.shape[0]) if matrix is not None else 0


def _nnz(matrix: sp.csr_matrix | None) -> int:
    return int(matrix.nnz) if matrix is not None else 0


def data_sizes(data: VaeInput) -> dict[str, int]:
    return {
        "users": int(data.train.shape[0] + len(data.validation_user_ids) + _rows(data.test_fold_in)),
        "items": int(data.train.shape[1]),
        "nonzeros": int(data.train.nnz + data.validation_fold_in.nnz + data.validation_target.nnz
                        + _nnz(data.test_fold_in) + _nnz(data.test_target)),
        "train_users": int(data.train.shape[0]),
        "validation_users": int(len(data.validation_user_ids)),
        "test_users": int(len(data.test_user_ids)) if data.test_user_ids is not None else 0,
    }


def _plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in metrics.items()}


def held_out_test_scores(recommender: Recommender, popularity: Popularity, data: VaeInput
                     ) -> tuple[dict[str, float], dict[str, float]]:
    """(model, popularity) metrics on the held-out test users. The validation users picked the
    best epoch, so their score is optimistic; the test users played no part in training."""
    if data.test_user_ids is None or data.test_fold_in is None or data.test_target is None:
        raise dg.Failure(description="this partition's vae_input has no test users (stored by an older "
                                     "version): materialize vae_input again")
    return (_plain_metrics(evaluate(recommender, data.test_fold_in, data.test_target)),
            _plain_metrics(evaluate(popularity, data.test_fold_in, data.test_target)))


def _train(log: Any, config: TrainingConfig, data: VaeInput, start: Start, store: BlobStore,
           on_epoch: Callable[[EpochReport], None]) -> tuple[TrainResult, dict[str, Any], dict[str, Any]]:
    """Train as `start` says: warm (train_warm from the starting model and its checkpoint's Adam
    moments, when usable) or full. Returns the result, the training_start record and, for a warm
    run, its report (empty otherwise)."""
    validation = HeldOut(user_ids=data.validation_user_ids, fold_in=data.validation_fold_in,
                         target=data.validation_target)
    train = sp.csr_matrix(data.train)
    training_start = start.record()
    if start.mode != "warm":
        full = train_recvae(train, validation, config.recvae_config(), device=config.device,
                            on_epoch=on_epoch)
        return full, training_start, {}
    moments, moments_note = load_moments(store, (start.source or {}).get("training_checkpoint"), start.model)
    if moments is None:
        log.warning(f"Adam starts {moments_note}")
    warm = train_warm(start.model, start.item_ids, train, data.item_ids, validation,
                      config.warm_recvae_config(), changed_users=changed_users(data, start),
                      warm=config.warm_config(), device=config.device, on_epoch=on_epoch, moments=moments)
    warm_report = {**warm.report.to_dict(), "optimizer_moments": moments_note}
    training_start["warm"] = warm_report
    report = warm.report
    log.info(f"warm: {report.users_per_epoch} of {report.training_users} users per epoch "
             f"({report.changed_users} changed, {report.focus_users} in focus); "
             f"{report.new_items_trained} of {report.new_items} new repositories trained; "
             f"optimizer moments {moments_note}")
    return warm.training, training_start, warm_report


@hourly_asset(
    kinds={"pytorch"},  # plus the artifact store's kind, by deployment (defs/definitions.py)
    pool=TRAINING_POOL,
    description="RecVAE trained on vae_input: a few epochs continuing the newest compatible registered "
                "model (warm), or from scratch (full: daily, on request, or without a compatible model); "
                "validation users pick the epoch, held-out test users give the score (test NDCG@100) "
                "next to the popularity baseline on the same users, "
                "written once to the artifact store as recvae_<score>_...pt.",
)
def recvae_model(context: dg.AssetExecutionContext, config: TrainingConfig, vae_input: VaeInput,
                 artifact_store: ArtifactStoreResource, mongo: MongoResource,
                 run_defaults: RunDefaults) -> dg.MaterializeResult:
    data = vae_input  # config resolved against the settings (with_run_defaults)
    partition_key, run_id = context.partition_key, context.run.run_id
    window_start, window_end = partition_window(partition_key)
    store = artifact_store.get_store()
    # a store we cannot write to fails the run now, not after an hour of training
    probe_write(store, f"{run_id}-{context.retry_number}")
    start = choose_start(mongo.get_database(), store, window_end=window_end, requested=config.mode,
                         daily_full=daily_full_run(partition_key, run_defaults.full_run_hour),
                         config=config.recvae_config(),
                         item_ids=data.item_ids, min_overlap=config.min_vocabulary_overlap,
                         max_age=timedelta(hours=config.warm_max_age_hours))
    for passed_over in start.passed_over:
        context.log.warning(f"not warm-starting from {passed_over}")
    context.log.info(f"{start.mode} training: {start.reason}")

    popularity = Popularity().fit(data.train)

    def on_epoch(report: Any) -> None:
        context.log.info(f"epoch {report.epoch}: loss={report.loss:.3f} ndcg@100={report.ndcg_at_100:.4f} "
                         f"recall@20={report.recall_at_20:.4f} recall@50={report.recall_at_50:.4f} "
                         f"({report.seconds:.1f}s){' best' if report.best else ''}")

    started = time.perf_counter()
    result, training_start, warm_report = _train(context.log, config, data, start, store, on_epoch)
    if result.initial_metrics is not None:  # the starting model, scored before any training
        training_start["initial_metrics"] = _plain_metrics(result.initial_metrics)
    training_seconds = time.perf_counter() - started
    validation_metrics = _plain_metrics(result.best_metrics)
    recommender = Recommender(result.model, data.item_ids, popularity.popularity.astype(np.float32))
    metrics, popularity_metrics = held_out_test_scores(recommender, popularity, data)
    score = metrics[SCORE_METRIC]
    context.log.info(f"best epoch {result.best_epoch}/{len(result.history)} ({result.stop_reason}): "
                     f"validation ndcg@100={validation_metrics['ndcg@100']:.4f}; test ndcg@100={score:.4f} "
                     f"vs popularity {popularity_metrics['ndcg@100']:.4f}")

    names = data.item_names if data.item_names is not None else data.item_ids.astype(str)
    version = code_version()
    artifact = dump_artifact(recommender, config=result.config, metrics=metrics, extra={
        "model_kind": MODEL_KIND,
        "item_names": [str(n) for n in names],
        "partition_key": partition_key,
        "run_id": run_id,
        "data_start": window_start.isoformat(),
        "data_end": window_end.isoformat(),
        "popularity_metrics": popularity_metrics,
        "validation_metrics": validation_metrics,
        "code_version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "training_mode": start.mode,
        "training_start": training_start,
    })
    stored = put_artifact(store, artifact, score, partition_key, run_id)
    context.log.info(f"wrote {stored.uri} ({stored.size_bytes} bytes, sha256 {stored.sha256[:12]}...)")
    ann_index = build_and_store(result.model, stored, store, _held_out_fold_in(data),
                                params=config.index_params(), min_items=config.ann_min_items,
                                recall_k=config.ann_recall_k, min_recall=config.ann_min_recall)

    checkpoint = store_moments(result.moments, stored, store) if result.moments is not None else None

    history = [{"epoch": r.epoch, "seconds": r.seconds, "loss": r.loss, "ndcg@100": r.ndcg_at_100,
                "recall@20": r.recall_at_20, "recall@50": r.recall_at_50, "best": float(r.best)}
               for r in result.history]
    model = TrainedModel(
        file_name=stored.name, bucket=store.location, uri=stored.uri, sha256=stored.sha256,
        size_bytes=stored.size_bytes, score=score, metrics=metrics, popularity_metrics=popularity_metrics,
        config={**result.config.to_dict(), "device": result.device}, history=history,
        data_sizes=data_sizes(data), training_seconds=training_seconds, epochs=len(result.history),
        window_end=window_end, model_kind=MODEL_KIND, run_id=run_id, partition_key=partition_key,
        window_start=window_start, best_epoch=result.best_epoch, stop_reason=result.stop_reason,
        code_version=version, training_mode=start.mode, training_start=training_start,
        validation_score=validation_metrics[SCORE_METRIC],
        validation_metrics=validation_metrics, ann_index=ann_index, training_checkpoint=checkpoint,
    )
    return dg.MaterializeResult(value=model, metadata={
        "score": score,
        "ndcg@100": score,
        "recall@20": metrics["recall@20"],
        "recall@50": metrics["recall@50"],
        "popularity_score": popularity_metrics[SCORE_METRIC],
        "popularity_recall@20": popularity_metrics["recall@20"],
        "popularity_recall@50": popularity_metrics["recall@50"],
        "score_minus_popularity": score - popularity_metrics[SCORE_METRIC],
        "validation_score": validation_metrics[SCORE_METRIC],
        "validation_users_scored": int(validation_metrics.get("users", 0)),
        "test_users_scored": int(metrics.get("users", 0)),
        "training_seconds": float(training_seconds),
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "device": result.device,
        **start.metadata(),
        **({"initial_score": training_start["initial_metrics"][SCORE_METRIC]}
           if "initial_metrics" in training_start else {}),
        **{f"warm_{k}": v for k, v in warm_report.items()},
        **learning_curve_metadata(result.history),
        "top_repositories_preview": preview_table(recommender, data, config.preview_k),
        "artifact": location_metadata(stored.uri),
        "artifact_file_name": stored.name,
        "artifact_sha256": stored.sha256,
        "artifact_bytes": stored.size_bytes,
        **({"training_checkpoint_file_name": checkpoint["file_name"],
            "training_checkpoint_bytes": checkpoint["size_bytes"]} if checkpoint else {}),
        "code_version": version,
        **index_metadata(ann_index, config.ann_min_items),
        **window_metadata(window_start, window_end),
    })

