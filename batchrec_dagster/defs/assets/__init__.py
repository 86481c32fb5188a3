"""The five assets of the hourly lineage, in order: MongoDB -> matrix -> split -> model -> registry,
and model_evaluation, which scores the registered models on each later hour."""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.defs.assets.model_evaluation import model_evaluation
from batchrec_dagster.defs.assets.model_registry_entry import model_registry_entry
from batchrec_dagster.defs.assets.raw_repositories import raw_repositories
from batchrec_dagster.defs.assets.recvae_model import recvae_model
from batchrec_dagster.defs.assets.user_item_matrix import user_item_matrix
from batchrec_dagster.defs.assets.vae_input import vae_input

LINEAGE = (raw_repositories, user_item_matrix, vae_input, recvae_model)


def build_assets(partitions: dg.PartitionsDefinition,
                 freshness: dg.FreshnessPolicy) -> list[dg.AssetsDefinition]:
    """Every asset on `partitions`; `freshness` is model_registry_entry's policy (one registration
    is one materialization of it)."""
    return [*(asset.build(partitions) for asset in LINEAGE),
            model_registry_entry.build(partitions, freshness_policy=freshness),
            model_evaluation.build(partitions)]


__all__ = ["build_assets", "model_evaluation", "model_registry_entry", "raw_repositories", "recvae_model",
           "user_item_matrix", "vae_input"]
