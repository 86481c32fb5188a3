"""The jobs the schedules, the sensors and the CLI launch: the five training assets for one hour,
and the comparable evaluation of one hour (its own job and schedule, so that it never waits for a
training run: a model registered for hour H-1 is scored on hour H as soon as H closes). Both are
partitioned like the assets they select."""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.training.k8s_resources import training_run_tags

ASSET_NAMES = ("raw_repositories", "user_item_matrix", "vae_input", "recvae_model",
               "model_registry_entry")
TRAINING_JOB_NAME = "hourly_training_job"
EVALUATION_JOB_NAME = "model_evaluation_job"


def hourly_training_job(training_device: str | None) -> dg.UnresolvedAssetJobDefinition:
    """The five assets and their checks for one hour; on Kubernetes (K8sRunLauncher) its run's pod
    asks for a GPU node when training on CUDA (BATCHREC_TRAINING_DEVICE)."""
    return dg.define_asset_job(
        TRAINING_JOB_NAME,
        selection=dg.AssetSelection.assets(*ASSET_NAMES),
        description="Read the hour's stars from MongoDB, train RecVAE and register it.",
        tags=training_run_tags(training_device),
    )


def model_evaluation_job() -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        EVALUATION_JOB_NAME,
        selection=dg.AssetSelection.assets("model_evaluation"),
        description="Score every fresh model on the hour's new stars (comparable scores), decide the "
                    "champion.",
    )
