"""model_registry_entry: the trained model's document in the MongoDB `models` collection."""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pymongo.database import Database

from batchrec_dagster.defs.assets.ann_index import index_metadata
from batchrec_dagster.defs.assets.common import hourly_asset
from batchrec_dagster.defs.assets.metadata import location_metadata, window_metadata
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.defs.resources import ArtifactStoreResource, MongoResource, RunDefaults
from batchrec_dagster.registry import champions
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.registry.models import entry_for_run
from batchrec_dagster.storage.blobs import ArtifactMismatchError, BlobNotFoundError, read_verified
from batchrec_dagster.storage.values import TrainedModel


def registry_entry(model: TrainedModel, *, partition_key: str, run_id: str) -> dict[str, Any]:
    """The document registry.models.register_model stores (created_at is set there, in UTC)."""
    data_start, data_end = partition_window(partition_key)
    return {
        "run_id": run_id,
        "partition_key": partition_key,
        "model_kind": model.model_kind,
        "score": float(model.score),
        "validation_score": None if model.validation_score is None else float(model.validation_score),
        "validation_metrics": dict(model.validation_metrics),
        "file_name": model.file_name,
        "bucket": model.bucket,
        "uri": model.uri,
        "sha256": model.sha256,
        "size_bytes": int(model.size_bytes),
        "data_start": data_start,
        "data_end": data_end,
        "metrics": dict(model.metrics),
        "popularity_metrics": dict(model.popularity_metrics),
        "data_sizes": dict(model.data_sizes),
        "config": dict(model.config),
        "code_version": model.code_version,
        "training_seconds": float(model.training_seconds),
        "epochs": int(model.epochs),
        "best_epoch": int(model.best_epoch),
        "stop_reason": model.stop_reason,
        "training_mode": model.training_mode,
        "training_mode_reason": model.training_start.get("reason", ""),
        "warm_start": ({k: v for k, v in model.training_start.items() if k not in ("mode", "reason")}
                       if model.training_mode == "warm" else None),
        "ann_index": dict(model.ann_index) if model.ann_index is not None else None,
        "training_checkpoint": (dict(model.training_checkpoint) if model.training_checkpoint is not None
                                else None),
    }


def serving_decision(db: Database, entry: dict[str, Any], policy: SelectionPolicy) -> dict[str, Any]:
    """The champion decision right after `entry` is registered, as metadata: a first model (or one
    replacing a champion that can no longer serve) serves at once; a valid champion is only replaced
    on comparable scores (model_evaluation). Recorded in `champions` (champions.decide_and_record)."""
    champions.ensure_indexes(db)
    decision = champions.decide_and_record(db, policy)
    stored = entry_for_run(db, entry["run_id"], entry["data_end"])
    return {
        "selected_for_serving": stored is not None and decision.serve_id == str(stored["_id"]),
        "champion": decision.champion_id or "none",
        "champion_reason": decision.reason,
    }


@hourly_asset(
    kinds={"mongodb"},  # its freshness policy comes from the settings, at build (definitions.py)
    io_manager_key="registry_io_manager",
    description="The model's entry in the MongoDB `models` registry (one per run and partition). The "
                "served model is the champion, chosen on comparable scores by model_evaluation; a first "
                "model serves at once.",
)
def model_registry_entry(context: dg.AssetExecutionContext, recvae_model: TrainedModel,
                         artifact_store: ArtifactStoreResource, mongo: MongoResource,
                         run_defaults: RunDefaults) -> Iterator[dg.Output | dg.AssetObservation]:
    # register only what can be served: the artifact must exist and be the bytes that were scored
    try:
        read_verified(artifact_store.get_store(), recvae_model.file_name,
                      size_bytes=recvae_model.size_bytes, sha256=recvae_model.sha256)
    except (BlobNotFoundError, ArtifactMismatchError) as exc:
        raise dg.Failure(description=f"refusing to register {recvae_model.uri}: {exc}") from exc
    entry = registry_entry(recvae_model, partition_key=context.partition_key, run_id=context.run.run_id)
    context.log.info(f"registering {entry['file_name']} (score {entry['score']:.4f})")
    yield dg.Output(entry, metadata={
        "score": entry["score"],
        "model_kind": entry["model_kind"],
        "file_name": entry["file_name"],
        "artifact": location_metadata(entry["uri"]),
        "run_id": entry["run_id"],
        "training_mode": entry["training_mode"],
        **index_metadata(entry["ann_index"]),
        **window_metadata(entry["data_start"], entry["data_end"]),
    })
    # Dagster hands a yielded Output to the IO manager before this generator resumes, so the entry
    # is in `models` now (registry_io_manager stores it; deciding is not an IO manager's job)
    decision = serving_decision(mongo.get_database(), entry, run_defaults.selection_policy())
    context.log.info(f"champion {decision['champion']}: {decision['champion_reason']}")
    yield dg.AssetObservation(asset_key=context.asset_key, partition=context.partition_key, metadata=decision)
