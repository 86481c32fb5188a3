"""raw_repositories: the catalogue and the stars a partition sees, read from MongoDB."""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
import time
from typing import Any, Optional

import dagster as dg

from batchrec_dagster.defs.assets.common import hourly_asset
from batchrec_dagster.defs.assets.config import SourceConfig
from batchrec_dagster.defs.assets.metadata import md_table, prefixed_counts, window_metadata
from batchrec_dagster.defs.partitions import daily_full_run, partition_window
from batchrec_dagster.defs.resources import MongoResource, RunDefaults
from batchrec_dagster.sources.collections import ensure_source_indexes
from batchrec_dagster.sources.partition_reads import read_hour, read_raw_repositories
from batchrec_dagster.sources.snapshot import plan_read, source_fingerprint
from batchrec_dagster.storage.codec import CodecError
from batchrec_dagster.storage.values import RawRepositories, StoredValueNotFoundError
from recvae.data import unique_sorted

EMBEDDED_NOTE = ("Older embedded layout (star_user_list inside each repository): there are no per-star "
                 "times, so this partition read the CURRENT state of the collection, not the state at "
                 "the end of its hour.")
UNREADABLE_SNAPSHOT = "the previous hour's snapshot is unreadable"


# The previous hour is a declared dependency on the asset itself, so Dagit draws it; an hour
# before the first partition does not exist (allow_nonexistent_upstream_partitions), and one that was
# never materialized, or cannot be read, means a full read rather than a failure.
PREVIOUS_HOUR = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1,
                                              allow_nonexistent_upstream_partitions=True)


def load_previous_hour(io_manager: Any, instance: dg.DagsterInstance, previous_keys: list[str]
                       ) -> tuple[Optional[RawRepositories], str]:  # noqa: UP045
    """The previous hour's stored value of this asset, or None and why not. Declared as a
    dependency (`deps`) but read here through the IO manager, not as an input: a missing or damaged
    snapshot is a reason for a full read, which an input that fails to load cannot express."""
    if not previous_keys:
        return None, "the first partition has no previous hour"
    try:
        value = io_manager.load_partition(instance, dg.AssetKey("raw_repositories"), previous_keys[0])
    except StoredValueNotFoundError:
        return None, "no snapshot of the previous hour"
    except CodecError as exc:
        return None, f"{UNREADABLE_SNAPSHOT}: {exc}"
    if not isinstance(value, RawRepositories):
        return None, f"the previous hour's stored value is a {type(value).__name__}"
    return value, ""


@hourly_asset(
    kinds={"mongodb", "numpy"},
    deps=[dg.AssetDep("raw_repositories", partition_mapping=PREVIOUS_HOUR)],
    description="The repository catalogue and every star event with starred_at before the end of the "
                "partition's hour, as columnar arrays: the previous hour's snapshot plus this hour's "
                "stars (incremental), or everything re-read (full: daily, or when no usable snapshot "
                "exists). Malformed documents are skipped and counted.",
)
def raw_repositories(context: dg.AssetExecutionContext, config: SourceConfig, mongo: MongoResource,
                     run_defaults: RunDefaults, io_manager: dg.ResourceParam[Any]) -> dg.MaterializeResult:
    start, end = partition_window(context.partition_key)
    layout = config.layout  # resolved against BATCHREC_SOURCE_LAYOUT (with_run_defaults)
    db = mongo.get_database()
    if layout == "stars":
        # the range query needs the starred_at index; the unique one is the loader's business
        for problem in ensure_source_indexes(db, unique=False):
            context.log.warning(f"could not create index {problem}")
    fingerprint = source_fingerprint(layout=layout, database=mongo.database, uri=mongo.uri,
                                     embedded_data_dir=mongo.embedded_data_dir)
    previous, missing = load_previous_hour(io_manager, context.instance,
                                           context.asset_partition_keys_for_input("raw_repositories"))
    plan = plan_read(previous, missing=missing, window_start=start, layout=layout, fingerprint=fingerprint,
                     requested=config.read,
                     daily_full=daily_full_run(context.partition_key, run_defaults.full_run_hour))
    # a damaged snapshot is worth a warning: the hour still runs (a full read), but someone should look
    log = context.log.warning if plan.reason.startswith(UNREADABLE_SNAPSHOT) else context.log.info
    log(f"{plan.mode} read: {plan.reason}")
    started = time.perf_counter()
    if plan.mode == "incremental":
        raw = read_hour(db, previous, start, end, batch_size=config.batch_size, fingerprint=fingerprint)
    else:
        raw = read_raw_repositories(db, start, end, layout=layout, batch_size=config.batch_size,
                                    fingerprint=fingerprint)
    read_seconds = time.perf_counter() - started
    skipped_total = sum(raw.skipped.values())
    if skipped_total:
        context.log.warning(f"skipped {skipped_total} malformed documents: {raw.skipped}")
    context.log.info(f"read {len(raw.repo_ids)} repositories and {raw.stars_read} star documents in "
                     f"{read_seconds:.1f}s: {len(raw.star_user_ids)} stars ({layout} layout) before "
                     f"{end.isoformat()}")

    metadata: dict = {
        "repositories": len(raw.repo_ids),
        "stars": len(raw.star_user_ids),
        "star_users": len(unique_sorted(raw.star_user_ids)),
        "read_mode": plan.mode,
        "read_reason": plan.reason,
        "stars_read": raw.stars_read,
        "read_seconds": float(read_seconds),
        "source_fingerprint": fingerprint,
        "skipped_total": skipped_total,
        **prefixed_counts("skipped", raw.skipped),
        "skipped_by_reason": md_table(["reason", "documents"], sorted(raw.skipped.items()) or [("none", 0)]),
        "layout": layout,
        **window_metadata(start, end),
    }
    if plan.mode == "incremental":
        metadata["previous_snapshot_stars"] = len(previous.star_user_ids)
        metadata["stars_added"] = len(raw.star_user_ids) - len(previous.star_user_ids)
    else:  # a range query never sees the later stars, so only full reads count them
        metadata["stars_after_window"] = raw.stars_after_window
    if layout == "embedded":
        metadata["partition_semantics"] = EMBEDDED_NOTE
    elif len(raw.starred_at):
        newest = raw.starred_at.max().astype("datetime64[us]").item()
        oldest = raw.starred_at.min().astype("datetime64[us]").item()
        metadata["newest_star"] = dg.MetadataValue.timestamp(newest.replace(tzinfo=start.tzinfo))
        metadata["oldest_star"] = dg.MetadataValue.timestamp(oldest.replace(tzinfo=start.tzinfo))
        metadata["partition_semantics"] = f"stars with starred_at < {end.isoformat()}"
    return dg.MaterializeResult(value=raw, metadata=metadata)
