"""IO managers: typed asset values in a local folder or a GCS bucket, registry entries in MongoDB.

The first four assets are stored with storage/codec.py (npz + JSON, no pickle) at
`<prefix>/<asset key>/<partition key>/<run id>.npz`. `TypedIOManager` writes them into the BlobStore
of its `store` (storage/blobs.py: where the bytes go, written atomically), the same store resource
type that holds the model artifacts (defs/resources.py: a local folder or a GCS bucket), so a local
run and a prod run store the same files.

Paths are per run, so that two runs of one hour at the same time never read each other's values
(issue 13: one run registered the other's model). A step loads the value its own run stored (or,
in a re-execution, the parent run's: Dagster names that run on the upstream output). A value no
run step produced, e.g. recvae_model when model_registry_entry is materialized alone, or the
previous hour's snapshot that raw_repositories extends, is that of the partition's newest
materialization. (Values stored before paths were per run, at `<asset>/<partition>.npz`, are not
read: re-materialize such a partition to load it alone.)
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from batchrec_dagster.defs.assets.metadata import location_metadata
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.defs.resources import ArtifactStoreResource, MongoResource
from batchrec_dagster.registry.models import MODELS, ensure_indexes, entries_for_partition, register_model
from batchrec_dagster.storage import codec
from batchrec_dagster.storage.blobs import BlobNotFoundError, BlobStore
from batchrec_dagster.storage.values import StoredValueNotFoundError


def _relative_path(asset_key: dg.AssetKey, partition_key: str | None, run_id: str) -> str:
    """`<asset>/<partition>/<run id>.npz` (`<asset>/<run id>.npz` when unpartitioned)."""
    base = "/".join(asset_key.path) + (f"/{partition_key}" if partition_key else "")
    return f"{base}/{run_id}.npz"


def _producing_run(context: dg.InputContext, partition_key: str | None) -> str:
    """The run whose stored value of this input partition the step must load."""
    upstream = context.upstream_output
    try:
        run_id = upstream.run_id if upstream is not None else None
    except dg.DagsterInvariantViolationError:
        run_id = None
    # a step of this run (or, re-executed, of its parent) produced it; for an asset from outside
    # the run, Dagster's stand-in upstream context carries a placeholder instead of a run id
    if run_id and context.instance.has_run(run_id):
        return run_id
    return _newest_materialization_run(context.instance, context.asset_key, partition_key)


def _newest_materialization_run(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                                partition_key: str | None) -> str:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key,
                              asset_partitions=[partition_key] if partition_key else None),
        limit=1).records
    if not records:
        where = f" partition {partition_key}" if partition_key else ""
        raise StoredValueNotFoundError(f"{asset_key.to_user_string()}{where} was never "
                                       f"materialized: materialize it first")
    return records[0].run_id


def _run_partition_keys(context: dg.InputContext) -> set[str] | None:
    """The partitions of the run: its `dagster/partition` tag, or the partition range that asset
    backfills tag their runs with (even a one-partition run carries a range, not the tag)."""
    if context.has_partition_key:
        return {context.partition_key}
    try:
        step = context.step_context
    except Exception:  # noqa: BLE001 - a context built outside a run has no step
        return None
    if not step.has_partition_key_range:
        return None
    return set(context.asset_partitions_def.get_partition_keys_in_range(step.partition_key_range))


def _partition_keys(context: dg.InputContext) -> list[str]:
    """The partitions to load. An unpartitioned consumer (e.g. an asset check declared without
    partitions_def) sees every partition of its input; inside a partitioned run it means the run's."""
    keys = list(context.asset_partition_keys)
    if len(keys) > 1:
        in_run = _run_partition_keys(context)
        narrowed = [key for key in keys if in_run is not None and key in in_run]
        if narrowed:
            return narrowed
    return keys


class TypedIOManager(dg.ConfigurableIOManager):
    """Asset values in the BlobStore of `store`: LocalArtifactStore(root=<folder>) locally,
    GCSArtifactStore(bucket=..., prefix=...) in prod (defs/deployments.py names the folder)."""

    store: ArtifactStoreResource

    def blob_store(self) -> BlobStore:
        """The stored values as a BlobStore (names are the relative paths); retention reads it too."""
        return self.store.get_store()

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        key = context.asset_partition_key if context.has_asset_partitions else None
        path = _relative_path(context.asset_key, key, context.run_id)
        stored = self.blob_store().put(path, codec.encode(obj))
        context.add_output_metadata({"stored_at": location_metadata(stored.uri),
                                     "stored_bytes": stored.size_bytes})

    def load_input(self, context: dg.InputContext) -> Any:
        if not context.has_asset_partitions:
            return self._load(context, None)
        keys = _partition_keys(context)
        if len(keys) == 1:
            return self._load(context, keys[0])
        return {key: self._load(context, key) for key in keys}

    def load_partition(self, instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition_key: str) -> Any:
        """The newest materialization's value of one partition of an asset, outside Dagster's input
        loading: how raw_repositories reads its own previous hour. That hour is a declared
        dependency (Dagit draws it), but not an input: loaded here, a snapshot that was never
        materialized, is missing or is damaged is an error the asset catches and answers with a full
        read, where an input would fail the step (docs/pipeline.md, "Incremental hours").
        StoredValueNotFoundError when it was never stored, codec.CodecError when it is unreadable."""
        run_id = _newest_materialization_run(instance, asset_key, partition_key)
        return self._read(_relative_path(asset_key, partition_key, run_id))

    def _load(self, context: dg.InputContext, partition_key: str | None) -> Any:
        run_id = _producing_run(context, partition_key)
        return self._read(_relative_path(context.asset_key, partition_key, run_id))

    def _read(self, path: str) -> Any:
        try:
            data = self.blob_store().read(path)
        except BlobNotFoundError as exc:
            raise StoredValueNotFoundError(f"{exc}: materialize that partition first") from exc
        return codec.decode(data)


class MongoRegistryIOManager(dg.ConfigurableIOManager):
    """Stores `model_registry_entry` as a document in the `models` collection (registry/models.py)
    and loads it; the champion decision that follows is the asset's."""

    mongo: MongoResource

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        db = self.mongo.get_database()
        ensure_indexes(db)
        stored = register_model(db, obj)
        filter_ = {"run_id": stored["run_id"], "data_end": stored["data_end"].isoformat()}
        context.add_output_metadata({
            "registry_id": str(stored["_id"]),
            "registry_collection": f"{db.name}.{MODELS}",
            "registry_filter": dg.MetadataValue.json(filter_),
            "registry_created_at": dg.MetadataValue.timestamp(stored["created_at"]),
        })

    def load_input(self, context: dg.InputContext) -> dict[str, Any] | None:
        """The newest entry registered for the input's partition (None if there is none)."""
        if not context.has_asset_partitions:
            raise dg.Failure("model_registry_entry is partitioned; load it for one partition")
        keys = _partition_keys(context)
        db = self.mongo.get_database()
        entries = {}
        for key in keys:
            found = entries_for_partition(db, partition_window(key)[1])
            entries[key] = found[-1] if found else None
        return entries[keys[0]] if len(keys) == 1 else entries
