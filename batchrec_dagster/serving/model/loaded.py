"""A model ready to answer, and how one is built from a registry entry: download, verify, parse,
warm up, and encode the response fragments once.

`load_model` reads the artifact through `storage.blobs.read_verified` (size and sha256 against the
registry entry), parses it with `recvae.load_artifact` (safetensors + JSON, never pickle), checks
that the artifact's own run id and partition key are the entry's (`check_identity`) and rejects a
model that gives NaN scores on warm-up input. Its errors say whether a retry can help:
`ModelLoadError` (download: network, missing object) or `ArtifactRejected` (the bytes are bad).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from bson import ObjectId
from pymongo.database import Database

from batchrec_dagster.serving.model.ann_index import AnnOptions, ApproxScorer, attach_index
from batchrec_dagster.serving.model.local_copies import LocalCopies
from batchrec_dagster.serving.model.names import item_names
from batchrec_dagster.serving.model.scoring import BatchScorer
from batchrec_dagster.storage.blobs import ArtifactMismatchError, BlobStore, read_verified
from recvae import ArtifactError, Recommender, load_artifact, load_artifact_file

log = logging.getLogger("batchrec.serving")


class ModelLoadError(RuntimeError):
    """The chosen model could not be downloaded, verified, loaded or warmed up."""


class ArtifactRejected(ModelLoadError):
    """The artifact itself is bad (size, checksum, format, warm-up): retrying cannot help."""


def json_safe(value: Any) -> Any:
    """Registry documents as JSON: ObjectId -> str, datetimes -> ISO 8601, numpy -> Python."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def entry_key(entry: Mapping[str, Any]) -> str:
    """Identity of a registry entry's artifact: the document id and the artifact checksum.

    `register_model` may update an entry in place (same run, same partition); a new checksum then
    counts as a different model.
    """
    return f"{entry.get('_id')}:{entry.get('sha256')}"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to answer: never mutated after construction, so it can be shared freely."""

    recommender: Recommender       # vocabulary (item_ids, index_of) and the model
    scorer: BatchScorer | ApproxScorer  # the model's top-k for request batches (exact or its index)
    entry: dict[str, Any]          # the registry document, JSON-safe
    names: np.ndarray              # object array: repository full_name per column (None if unknown)
    names_source: str              # "artifact", "mongodb" or "none"
    loaded_at: datetime
    load_seconds: float
    key: str
    summary: dict[str, Any] = field(default_factory=dict)  # what each response says about the model
    # per column, the start of its JSON object in a response ('{"repo_id":1,"name":"a/b","score":'),
    # encoded once at load so a response costs a join, not a json.dumps per item
    json_prefix: np.ndarray | None = None
    summary_json: str = "null"
    # repository id -> column, for integer vocabularies (None otherwise: `recommender.index_of`)
    column_of: dict[int, int] | None = None
    data_end: datetime | None = None  # end of the training data window (the model's age)
    # lower-case owner/name -> repository id, for inputs given by name (the API and the page)
    name_index: dict[str, Any] = field(default_factory=dict)
    ann: dict[str, Any] = field(default_factory=dict)  # exact or approximate path, and why

    @property
    def n_items(self) -> int:
        return self.recommender.n_items


def recommend_batch(model: LoadedModel, columns: list[np.ndarray], k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k column indices and scores for several users at once (one forward pass)."""
    return model.scorer.recommend(columns, k)


def _warm_up(scorer: BatchScorer | ApproxScorer) -> None:
    """Run the shapes requests will use (first calls allocate) and reject non-finite models."""
    n = scorer.n_items
    rng = np.random.default_rng(0)
    inputs = [np.zeros(0, dtype=np.int64), np.array([0], dtype=np.int64)]
    inputs += [rng.choice(n, size=min(n, 10), replace=False) for _ in range(14)]
    for batch in (inputs[:1], inputs[1:2], inputs, inputs + inputs):
        _, scores = scorer.recommend(batch, min(20, n))
        if not (np.isfinite(scores) | np.isneginf(scores)).all():
            raise ArtifactRejected("model produces NaN or +inf scores on warm-up input")


def _download(store: BlobStore, entry: Mapping[str, Any], file_name: str,
              copies: LocalCopies | None = None) -> bytes | Path:
    """The verified bytes, or with `copies` the verified local file (local_copies.py)."""
    try:
        if copies is not None:
            return copies.path(store, file_name, entry, ".safetensors")
        return read_verified(store, file_name, size_bytes=entry.get("size_bytes"),
                             sha256=entry.get("sha256"))
    except (ArtifactMismatchError, ValueError) as exc:
        # not the recorded bytes (size, sha256), or a name the store refuses (one that escapes
        # its folder): the same bytes or name will fail again
        raise ArtifactRejected(f"{file_name}: {exc}") from exc
    except Exception as exc:  # not found, network, permissions: may be fixed by a retry
        where = getattr(store, "location", None)
        hint = (f" (the registry says it is in {entry.get('bucket')!r}, this server reads {where!r})"
                if entry.get("bucket") and where and entry.get("bucket") != where else "")
        raise ModelLoadError(f"download of {file_name} failed: {type(exc).__name__}: {exc}{hint}"
                             ) from exc


IDENTITY_FIELDS = ("run_id", "partition_key")  # written into each artifact by the pipeline


def check_identity(entry: Mapping[str, Any], extra: Mapping[str, Any], file_name: str) -> None:
    """The artifact must be the entry's own model: its run id and partition key (in the artifact's
    metadata) equal the entry's. A hand-edited entry pointing at another model's file (its
    file_name, sha256 and size copied) passes the checksum, but would serve that model's weights
    under this entry's id. Artifacts that carry no identity (older ones) are not checked."""
    for name in IDENTITY_FIELDS:
        own, registered = extra.get(name), entry.get(name)
        if own is not None and registered is not None and str(own) != str(registered):
            raise ArtifactRejected(
                f"{file_name}: the artifact is another model's: its {name} is {own!r}, registry entry "
                f"{entry.get('_id')} says {registered!r} (file_name, sha256 or size edited by hand?)")


def load_model(entry: Mapping[str, Any], store: BlobStore, names_db: Database | None,
               ann: AnnOptions | None = None, copies: LocalCopies | None = None) -> LoadedModel:
    """The registry entry's model, verified and warmed up (see the module docstring); with `ann`,
    a large catalog is served from its index (ann_index.py), verified or rebuilt; with `copies`,
    the weights and the index are mapped from verified local files that all workers share."""
    started = time.perf_counter()
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise ArtifactRejected("registry entry has no file_name")
    local = _download(store, entry, file_name, copies)
    try:
        artifact = (load_artifact_file(local, device="cpu") if isinstance(local, Path)
                    else load_artifact(local, device="cpu"))
        del local  # the bytes (without `copies`) are the model's tensors' copy now
    except ArtifactError as exc:
        raise ArtifactRejected(f"{file_name}: not a loadable artifact: {exc}") from exc
    check_identity(entry, artifact.extra, file_name)
    recommender = artifact.recommender
    try:
        scorer, ann_status = attach_index(BatchScorer(recommender), entry, store, ann, copies)
        _warm_up(scorer)
    except Exception as exc:
        raise ArtifactRejected(f"{file_name}: warm-up failed: {type(exc).__name__}: {exc}") from exc
    if copies is not None:
        copies.prune()  # earlier models' copies (this one's were just touched)
    try:
        names, names_source = item_names(names_db, recommender.item_ids, artifact.extra)
    except Exception as exc:  # names are cosmetic: serve ids without them rather than fail
        log.warning("repository names unavailable for %s: %s", file_name, exc)
        names, names_source = np.full(recommender.n_items, None, dtype=object), "none"
    safe_entry = json_safe(entry)
    summary = {"id": safe_entry.get("_id"),
               **{k: safe_entry.get(k) for k in ("run_id", "partition_key", "score", "file_name")}}
    prefixes = np.empty(recommender.n_items, dtype=object)
    prefixes[:] = [f'{{"repo_id":{json.dumps(i)},"name":{json.dumps(n)},"score":'
                   for i, n in zip(recommender.item_ids.tolist(), names.tolist(), strict=True)]
    item_ids = recommender.item_ids
    column_of = ({i: c for c, i in enumerate(item_ids.tolist())} if item_ids.dtype.kind in "iu"
                 else None)
    name_index = {n.lower(): i for n, i in zip(names.tolist(), item_ids.tolist(), strict=True)
                  if isinstance(n, str)}
    return LoadedModel(recommender=recommender, scorer=scorer, json_prefix=prefixes, name_index=name_index,
                       column_of=column_of, summary_json=json.dumps(summary, separators=(",", ":")),
                       entry=safe_entry, names=names, names_source=names_source,
                       loaded_at=datetime.now(UTC), load_seconds=time.perf_counter() - started,
                       key=entry_key(entry), summary=summary, data_end=_aware(entry.get("data_end")),
                       ann=ann_status)


def _aware(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) and value.tzinfo is not None else None
