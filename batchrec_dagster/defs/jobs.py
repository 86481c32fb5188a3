"""The jobs the schedules, the sensors and the CLI launch: the five training assets for one hour,
and the comparable evaluation of one hour (its own job and schedule, so that it never waits for a
training run: a model registered for hour H-1 is scored on hour H as soon as H closes)."""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.defs.partitions import hourly_partitions
from batchrec_dagster.settings import get_settings
from batchrec_dagster.training.k8s_resources import training_run_tags

ASSET_NAMES = ("raw_repositories", "user_item_matrix", "vae_input", "recvae_model",
               "model_registry_entry")

hourly_training_job = dg.define_asset_job(
    "hourly_training_job",
    selection=dg.AssetSelection.assets(*ASSET_NAMES),
    partitions_def=hourly_partitions,
    description="Read the hour's stars from MongoDB, train RecVAE and register it.",
    # on Kubernetes (K8sRunLauncher) the run's pod asks for a GPU node when training on CUDA
    tags=training_run_tags(get_settings().training_device),
)

EVALUATION_JOB_NAME = "model_evaluation_job"

model_evaluation_job = dg.define_asset_job(
    EVALUATION_JOB_NAME,
    selection=dg.AssetSelection.assets("model_evaluation"),
    partitions_def=hourly_partitions,
    description="Score every fresh model on the hour's new stars (comparable scores), decide the champion.",
)
