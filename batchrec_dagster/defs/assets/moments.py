"""The training checkpoint next to each artifact: Adam's moments at the end of its training
(recvae.checkpoint says why a warm run continues them). It is not part of the served artifact:
servers never read it, and a missing or damaged one only makes the next warm run start Adam
afresh, which the run's metadata says.

The record (file name, uri, sha256, size) goes into `TrainedModel.training_checkpoint` and from
there into the registry entry, which keeps the blob from retention (registry.models.referenced_files).
"""

from __future__ import annotations

from typing import Any

from batchrec_dagster.storage.blobs import (
    ArtifactMismatchError,
    BlobNotFoundError,
    BlobStore,
    StoredBlob,
    read_verified,
)
from recvae import RecVAE
from recvae.checkpoint import CheckpointError, OptimizerMoments, dump_checkpoint, load_checkpoint

MOMENTS_SUFFIX = ".moments"


def store_moments(moments: OptimizerMoments, artifact: StoredBlob, store: BlobStore) -> dict[str, Any]:
    """Write the checkpoint next to `artifact`; its record for the registry entry."""
    stored = store.put_new(f"{artifact.name}{MOMENTS_SUFFIX}", dump_checkpoint(moments))
    return {"file_name": stored.name, "uri": stored.uri, "sha256": stored.sha256,
            "size_bytes": stored.size_bytes, "artifact_sha256": artifact.sha256}


def load_moments(store: BlobStore, record: dict[str, Any] | None, model: RecVAE
                 ) -> tuple[OptimizerMoments | None, str]:
    """(the moments, "carried") from the starting model's checkpoint record, or (None, why a warm
    run starts Adam afresh): no record, a missing blob, a size or sha256 mismatch, unreadable
    bytes, or moments that do not fit `model`."""
    if not record:
        return None, "fresh: the starting model has no training checkpoint"
    try:
        data = read_verified(store, record["file_name"], size_bytes=record.get("size_bytes"),
                             sha256=record.get("sha256"))
        moments = load_checkpoint(data)
        moments.check_fits(model)
    except (BlobNotFoundError, ArtifactMismatchError, CheckpointError, KeyError) as exc:
        return None, f"fresh: training checkpoint {record.get('file_name')} not usable ({exc})"
    return moments, "carried"
