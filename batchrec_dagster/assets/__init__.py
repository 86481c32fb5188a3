"""The five assets of the hourly lineage, in order: MongoDB -> matrix -> split -> model -> registry."""

from batchrec_dagster.assets.matrix import user_item_matrix
from batchrec_dagster.assets.raw import raw_repositories
from batchrec_dagster.assets.registry_entry import model_registry_entry
from batchrec_dagster.assets.split import vae_input
from batchrec_dagster.assets.training import recvae_model

ASSETS = [raw_repositories, user_item_matrix, vae_input, recvae_model, model_registry_entry]

__all__ = ["ASSETS", "model_registry_entry", "raw_repositories", "recvae_model", "user_item_matrix",
           "vae_input"]
