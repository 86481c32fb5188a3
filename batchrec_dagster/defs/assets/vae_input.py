"""vae_input: training users, held-out validation and test users (80/20 fold-in), fixed per partition.

The held-out users are chosen by a hash of their id (`recvae.stable_user_order`), not by the
partition's seed: hour after hour they stay held out, so a warm run, which continues the model
of an earlier hour, is never early-stopped or scored on users that model trained on."""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
import dagster as dg
import numpy as np

from batchrec_dagster.defs.assets.common import hourly_asset, partition_seed
from batchrec_dagster.defs.assets.config import SplitConfig
from batchrec_dagster.defs.assets.metadata import window_metadata
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.storage.values import UserItemMatrix, VaeInput
from recvae import Interactions, split_users, stable_user_order


def build_vae_input(matrix: UserItemMatrix, config: SplitConfig, seed: int) -> VaeInput:
    n_users = matrix.matrix.shape[0]
    n_validation = min(config.validation_users, int(n_users * config.max_validation_fraction))
    if n_validation < 1:
        raise dg.Failure(description=f"{n_users} users are too few to hold any out for validation "
                                     f"(max_validation_fraction={config.max_validation_fraction})")
    # separate test users: the validation users choose the epoch, so their score is optimistic
    n_test = min(config.test_users, int(n_users * config.max_validation_fraction))
    split = split_users(Interactions(matrix.matrix, matrix.user_ids, matrix.item_ids),
                        n_validation=n_validation, n_test=n_test, holdout_fraction=config.holdout_fraction,
                        min_heldout_items=config.min_heldout_items, seed=seed,
                        user_order=stable_user_order(matrix.user_ids, config.holdout_salt))
    for name, held, wanted in (("validation", split.validation, n_validation), ("test", split.test, n_test)):
        if held is None or held.n_users == 0:
            raise dg.Failure(description=f"none of the {wanted} held-out {name} users has "
                                         f"{config.min_heldout_items} repositories; nothing to score on")
    # split_users keeps the columns the training users have; carry the names along with them
    # (item_ids are sorted: build_interactions orders columns by id and the filters keep that order)
    names = None
    if matrix.item_names is not None:
        names = matrix.item_names[np.searchsorted(matrix.item_ids, split.item_ids)]
    last = None
    if matrix.user_last_starred is not None:  # split_users keeps the rows' order: map by id
        order = np.argsort(matrix.user_ids)
        last = matrix.user_last_starred[order][np.searchsorted(matrix.user_ids[order], split.train_user_ids)]
    return VaeInput(train=split.train, train_last_starred=last, train_user_ids=split.train_user_ids,
                    item_ids=split.item_ids,
                    validation_user_ids=split.validation.user_ids,
                    validation_fold_in=split.validation.fold_in,
                    validation_target=split.validation.target, seed=seed,
                    window_end=matrix.window_end, item_names=names, window_start=matrix.window_start,
                    test_user_ids=split.test.user_ids, test_fold_in=split.test.fold_in,
                    test_target=split.test.target)


@hourly_asset(
    kinds={"scipy"},
    description="The training matrix plus held-out validation and test users, each split 80/20 into "
                "fold-in and scored items. The held-out users are the same every hour (a hash of their "
                "id); which of their items are scored is drawn from the partition key.",
)
def vae_input(context: dg.AssetExecutionContext, config: SplitConfig,
              user_item_matrix: UserItemMatrix) -> dg.MaterializeResult:
    seed = config.seed if config.seed is not None else partition_seed(context.partition_key)
    result = build_vae_input(user_item_matrix, config, seed)
    context.log.info(f"{result.train.shape[0]} training users, {len(result.validation_user_ids)} validation "
                     f"users, {len(result.test_user_ids)} test users, {result.train.shape[1]} repositories "
                     f"(seed {seed})")
    return dg.MaterializeResult(value=result, metadata={
        "train_users": int(result.train.shape[0]),
        "validation_users": int(len(result.validation_user_ids)),
        "items": int(result.train.shape[1]),
        "train_nonzeros": int(result.train.nnz),
        "validation_fold_in_nonzeros": int(result.validation_fold_in.nnz),
        "validation_target_nonzeros": int(result.validation_target.nnz),
        "test_users": int(len(result.test_user_ids)),
        "seed": seed,
        **window_metadata(*partition_window(context.partition_key)),
    })
