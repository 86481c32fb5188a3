"""One-file model artifacts: safetensors tensors + JSON metadata, never pickle.

Layout: tensors `model.<state_dict key>`, `item_popularity` (float32) and, for integer item ids,
`item_ids` (int64). String item ids travel as a JSON list in the metadata. The metadata also
holds the format version, hyper-parameters, metrics, `extra`, and a sha256 over the canonical
metadata and every tensor's name, dtype, shape and bytes, so truncation and tampering are caught.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import safetensors.torch
import torch

from recvae.device import resolve_device
from recvae.inference import Recommender
from recvae.model import RecVAE, RecVAEConfig
from recvae.signed import MAX_HEADER, SignedFormat, dump_signed

FORMAT_VERSION = 1
FORMAT_NAME = "batchrec-recvae"
_MODEL_PREFIX = "model."


class ArtifactError(ValueError):
    """The bytes are not a loadable artifact: truncated, tampered, mismatched or unknown version."""


_FORMAT = SignedFormat(FORMAT_NAME, FORMAT_VERSION, ArtifactError, "batchrec RecVAE artifact")


@dataclass
class Artifact:
    recommender: Recommender
    config: RecVAEConfig
    metrics: dict[str, float]
    extra: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


def dump_artifact(
    recommender: Recommender,
    *,
    config: RecVAEConfig,
    metrics: dict[str, float],
    extra: dict | None = None,
) -> bytes:
    """Serialize a recommender with its config, metrics and `extra` (must be JSON-serializable)."""
    tensors = {
        _MODEL_PREFIX + k: v.detach().cpu().contiguous() for k, v in recommender.model.state_dict().items()
    }
    tensors["item_popularity"] = torch.from_numpy(
        np.ascontiguousarray(recommender.item_popularity, dtype=np.float32)
    )
    item_ids = recommender.item_ids
    if item_ids.dtype.kind == "i":
        tensors["item_ids"] = torch.from_numpy(np.ascontiguousarray(item_ids, dtype=np.int64))
        id_dtype, ids_json = "int64", None
    else:
        id_dtype, ids_json = "str", [str(x) for x in item_ids.tolist()]
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "n_items": recommender.n_items,
        "config": config.to_dict(),
        "metrics": {str(k): float(v) for k, v in metrics.items()},
        "extra": extra or {},
        "item_id_dtype": id_dtype,
        "item_ids": ids_json,
    }
    try:
        json.dumps(meta, allow_nan=True)
    except TypeError as exc:
        raise TypeError(f"metrics and extra must be JSON-serializable: {exc}") from exc
    return dump_signed(meta, tensors)


def load_artifact(data: bytes, *, device: str | None = None) -> Artifact:
    """Parse and verify an artifact; raises ArtifactError for anything it cannot trust, and
    CudaUnavailableError (before reading anything) for a CUDA `device` this process lacks."""
    if device is not None:
        device = str(resolve_device(device))
    meta, tensors = _FORMAT.load(data)
    return _assemble(meta, tensors, device)


def load_artifact_file(path: str | os.PathLike[str], *, device: str | None = None) -> Artifact:
    """`load_artifact` of a local file whose tensors stay memory-mapped: the weights are the page
    cache's pages, shared by every process that maps the same file, and only the pages a process
    reads are resident (the encoder's input rows of the users it serves). The mapping is private
    (copy-on-write): a write changes that process's copy, never the file. Verified as
    `load_artifact` verifies (the checksum over every tensor's bytes) before it is used."""
    if device is not None:
        device = str(resolve_device(device))
    with open(path, "rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        raw_meta = _FORMAT.header(head + f.read(min(size, MAX_HEADER)))
    meta = _FORMAT.meta(raw_meta)
    try:
        with safetensors.safe_open(os.fspath(path), framework="pt") as tensors_file:
            tensors = {name: tensors_file.get_tensor(name) for name in tensors_file.keys()}  # noqa: SIM118 - not a dict
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ArtifactError(f"artifact tensors cannot be read (truncated or corrupt): {exc}") from exc
    _FORMAT.verify(meta, raw_meta, tensors)
    return _assemble(meta, tensors, device)


def _assemble(meta: dict[str, Any], tensors: dict[str, torch.Tensor], device: str | None) -> Artifact:
    try:
        config = RecVAEConfig.from_dict(meta["config"])
        n_items = int(meta["n_items"])
        if meta["item_id_dtype"] == "int64":
            item_ids = tensors["item_ids"].numpy()
        elif meta["item_id_dtype"] == "str":
            item_ids = np.asarray(meta["item_ids"], dtype=str)
        else:
            raise ArtifactError(f"unknown item id dtype {meta['item_id_dtype']!r}")
        popularity = tensors["item_popularity"].numpy()
        with torch.device("meta"):  # no memory for weights that the artifact's tensors replace
            model = RecVAE(n_items, config)
        state = {k[len(_MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_MODEL_PREFIX)}
        model.load_state_dict(state, strict=True, assign=True)  # the tensors themselves, no copy
        recommender = Recommender(model, item_ids, popularity, device=device)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"artifact contents do not match its metadata: {exc}") from exc
    return Artifact(
        recommender=recommender,
        config=config,
        metrics=dict(meta["metrics"]),
        extra=dict(meta["extra"]),
        format_version=int(meta["format_version"]),
    )
