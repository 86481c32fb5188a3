"""The five assets of the hourly lineage, in order: MongoDB -> matrix -> split -> model -> registry."""

from batchrec_dagster.defs.assets.model_registry_entry import model_registry_entry
from batchrec_dagster.defs.assets.raw_repositories import raw_repositories
from batchrec_dagster.defs.assets.recvae_model import recvae_model
from batchrec_dagster.defs.assets.user_item_matrix import user_item_matrix
from batchrec_dagster.defs.assets.vae_input import vae_input

ASSETS = [raw_repositories, user_item_matrix, vae_input, recvae_model, model_registry_entry]

__all__ = ["ASSETS", "model_registry_entry", "raw_repositories", "recvae_model", "user_item_matrix",
           "vae_input"]
