"""The job the schedule, the sensors and the CLI launch: all five assets for one hour."""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.partitions import hourly_partitions

ASSET_NAMES = ("raw_repositories", "user_item_matrix", "vae_input", "recvae_model",
               "model_registry_entry")

hourly_training_job = dg.define_asset_job(
    "hourly_training_job",
    selection=dg.AssetSelection.assets(*ASSET_NAMES),
    partitions_def=hourly_partitions,
    description="Read the hour's stars from MongoDB, train RecVAE and register it.",
)
