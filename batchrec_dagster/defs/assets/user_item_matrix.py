"""user_item_matrix: the meaningful users and repositories as a sparse CSR matrix."""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
import dagster as dg
import numpy as np

from batchrec_dagster.defs.assets.common import hourly_asset
from batchrec_dagster.defs.assets.config import MatrixFilterConfig
from batchrec_dagster.defs.assets.metadata import prefixed_counts, window_metadata
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.storage.values import RawRepositories, UserItemMatrix
from recvae import build_interactions, filter_min_counts


def build_user_item_matrix(raw: RawRepositories, config: MatrixFilterConfig) -> UserItemMatrix:
    """Keep repositories with enough GitHub stars, then drop sparse users and items until stable."""
    popular = raw.repo_ids[raw.repo_stars >= config.min_repo_stars]
    on_popular = np.isin(raw.star_repo_ids, popular)
    inter = build_interactions(raw.star_user_ids[on_popular], raw.star_repo_ids[on_popular])
    filtered, stats = filter_min_counts(inter, min_items_per_user=config.min_items_per_user,
                                        min_users_per_item=config.min_users_per_item)
    dropped = {
        "repos_below_min_stars": int(len(raw.repo_ids) - len(popular)),
        "stars_on_repos_below_min_stars": int((~on_popular).sum()),
        "repos_without_stars": int(len(popular) - inter.n_items),
        "sparse_users": int(stats["users_dropped"]),
        "sparse_items": int(stats["items_dropped"]),
        "stars_of_sparse_users_or_items": int(inter.matrix.nnz - filtered.matrix.nnz),
        "filter_rounds": int(stats["rounds"]),
    }
    order = np.argsort(raw.repo_ids)
    names = raw.full_names[order][np.searchsorted(raw.repo_ids[order], filtered.item_ids)] \
        if len(filtered.item_ids) else np.zeros(0, dtype=str)
    return UserItemMatrix(matrix=filtered.matrix, user_ids=filtered.user_ids, item_ids=filtered.item_ids,
                          dropped=dropped, window_end=raw.window_end, item_names=names,
                          window_start=raw.window_start, user_last_starred=last_starred(
                              raw.star_user_ids, raw.starred_at, filtered.user_ids))


def last_starred(star_user_ids: np.ndarray, starred_at: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
    """Each of `user_ids`' newest star time (datetime64[us]; NaT when no star has a time)."""
    out = np.full(len(user_ids), np.iinfo(np.int64).min, dtype=np.int64)  # NaT's integer
    if len(star_user_ids) and len(user_ids):
        order = np.argsort(user_ids)
        pos = np.searchsorted(user_ids[order], star_user_ids).clip(0, len(user_ids) - 1)
        mine = user_ids[order][pos] == star_user_ids
        times = np.asarray(starred_at, dtype="datetime64[us]").view(np.int64)
        np.maximum.at(out, order[pos[mine]], times[mine])
    return out.view("datetime64[us]")


@hourly_asset(
    kinds={"scipy"},
    description="Users x repositories (binary CSR) after the star-count and min-count filters, with "
                "the id vocabularies of rows and columns.",
)
def user_item_matrix(context: dg.AssetExecutionContext, config: MatrixFilterConfig,
                     raw_repositories: RawRepositories) -> dg.MaterializeResult:
    result = build_user_item_matrix(raw_repositories, config)
    users, items = result.matrix.shape
    if users == 0 or items == 0:
        raise dg.Failure(
            description=f"no user and repository is left after filtering "
                        f"{len(raw_repositories.star_user_ids)} stars with {config.model_dump()}; "
                        f"dropped: {result.dropped}. "
                        + ("No star was read: load data (`batchrec load-demo`) or check the source "
                           "layout (BATCHREC_SOURCE_LAYOUT)." if len(raw_repositories.star_user_ids) == 0
                           else "Lower the thresholds or load more data."),
            metadata=prefixed_counts("dropped", result.dropped))
    density = result.matrix.nnz / float(users * items)
    context.log.info(f"{users} users x {items} repositories, {result.matrix.nnz} stars; "
                     f"dropped {result.dropped}")
    return dg.MaterializeResult(value=result, metadata={
        "users": users,
        "items": items,
        "nonzeros": int(result.matrix.nnz),
        "density": float(density),
        **prefixed_counts("dropped", result.dropped),
        "filters": dg.MetadataValue.json(config.model_dump()),
        **window_metadata(*partition_window(context.partition_key)),
    })
