"""raw_repositories: the catalogue and the stars a partition sees, read from MongoDB."""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
import dagster as dg
import numpy as np

from batchrec_dagster.assets.common import hourly_asset
from batchrec_dagster.assets.config import SourceConfig
from batchrec_dagster.assets.metadata import md_table, prefixed_counts, window_metadata
from batchrec_dagster.partitions import partition_window
from batchrec_dagster.resources import MongoResource
from batchrec_dagster.settings import get_settings
from batchrec_dagster.sources import read_raw_repositories
from batchrec_dagster.stars import ensure_source_indexes

EMBEDDED_NOTE = ("Older embedded layout (star_user_list inside each repository): there are no per-star "
                 "times, so this partition read the CURRENT state of the collection, not the state at "
                 "the end of its hour.")


@hourly_asset(
    kinds={"mongodb", "numpy"},
    description="The repository catalogue and every star event with starred_at before the end of the "
                "partition's hour, as columnar arrays. Malformed documents are skipped and counted.",
)
def raw_repositories(context: dg.AssetExecutionContext, config: SourceConfig,
                     mongo: MongoResource) -> dg.MaterializeResult:
    start, end = partition_window(context.partition_key)
    layout = config.layout or get_settings().source_layout
    db = mongo.get_database()
    if layout == "stars":
        # the range query needs the starred_at index; the unique one is the loader's business
        for problem in ensure_source_indexes(db, unique=False):
            context.log.warning(f"could not create index {problem}")
    raw = read_raw_repositories(db, start, end, layout=layout, batch_size=config.batch_size)
    skipped_total = sum(raw.skipped.values())
    if skipped_total:
        context.log.warning(f"skipped {skipped_total} malformed documents: {raw.skipped}")
    context.log.info(f"read {len(raw.repo_ids)} repositories and {len(raw.star_user_ids)} stars "
                     f"({layout} layout) before {end.isoformat()}")

    metadata: dict = {
        "repositories": len(raw.repo_ids),
        "stars": len(raw.star_user_ids),
        "star_users": int(len(np.unique(raw.star_user_ids))),
        "stars_after_window": raw.stars_after_window,
        "skipped_total": skipped_total,
        **prefixed_counts("skipped", raw.skipped),
        "skipped_by_reason": md_table(["reason", "documents"], sorted(raw.skipped.items()) or [("none", 0)]),
        "layout": layout,
        **window_metadata(start, end),
    }
    if layout == "embedded":
        metadata["partition_semantics"] = EMBEDDED_NOTE
    elif len(raw.starred_at):
        newest = raw.starred_at.max().astype("datetime64[us]").item()
        oldest = raw.starred_at.min().astype("datetime64[us]").item()
        metadata["newest_star"] = dg.MetadataValue.timestamp(newest.replace(tzinfo=start.tzinfo))
        metadata["oldest_star"] = dg.MetadataValue.timestamp(oldest.replace(tzinfo=start.tzinfo))
        metadata["partition_semantics"] = f"stars with starred_at < {end.isoformat()}"
    return dg.MaterializeResult(value=raw, metadata=metadata)
