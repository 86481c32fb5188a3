"""The typed storage format of the asset values in types.py: one .npz file, never a pickle.

Arrays are stored as npy members (read back with allow_pickle=False, so object arrays are refused
on both sides), a CSR matrix as its three arrays plus its shape, and everything else (scalars,
dicts, lists, datetimes) as JSON in a `__meta__` member that also names the dataclass. Loading an
unknown type, a newer format version or a member that is missing raises CodecError.
"""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from batchrec_dagster.types import RawRepositories, TrainedModel, UserItemMatrix, VaeInput

FORMAT = "batchrec-asset"
FORMAT_VERSION = 1
_META = "__meta__"
TYPES: dict[str, type] = {t.__name__: t for t in (RawRepositories, UserItemMatrix, VaeInput, TrainedModel)}


class CodecError(ValueError):
    """The bytes are not a stored asset value this code can read."""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise CodecError("naive datetimes are not stored; make them timezone-aware (UTC)")
        return {"__datetime__": value.isoformat()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _json_hook(obj: dict[str, Any]) -> Any:
    if set(obj) == {"__datetime__"}:
        return datetime.fromisoformat(obj["__datetime__"])
    return obj


def _plain_array(name: str, value: np.ndarray) -> np.ndarray:
    if value.dtype.kind == "O":
        # object arrays would need pickle; strings become a fixed-width unicode array instead
        try:
            value = value.astype(str)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"field {name!r} is an object array that is not strings") from exc
    return value


def encode(value: Any) -> bytes:
    """The .npz bytes of one of the dataclasses in types.py."""
    type_name = type(value).__name__
    if TYPES.get(type_name) is not type(value):
        raise CodecError(f"cannot store a {type_name}; storable types: {', '.join(TYPES)}")
    arrays: dict[str, np.ndarray] = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        v = getattr(value, f.name)
        if sp.issparse(v):
            csr = sp.csr_matrix(v)
            arrays[f"{f.name}.data"] = csr.data
            arrays[f"{f.name}.indices"] = csr.indices
            arrays[f"{f.name}.indptr"] = csr.indptr
            fields[f.name] = {"kind": "csr", "shape": [int(n) for n in csr.shape]}
        elif isinstance(v, np.ndarray):
            arrays[f.name] = _plain_array(f.name, v)
            fields[f.name] = {"kind": "array"}
        else:
            fields[f.name] = {"kind": "json", "value": v}
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "type": type_name, "fields": fields}
    try:
        meta_bytes = json.dumps(meta, default=_json_default, allow_nan=True).encode()
    except TypeError as exc:
        raise CodecError(f"{type_name} has a field that cannot be stored: {exc}") from exc
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{_META: np.frombuffer(meta_bytes, dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def decode(data: bytes) -> Any:
    """The dataclass stored by `encode`."""
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CodecError(f"not a stored asset value (.npz): {exc}") from exc
    with npz:
        if _META not in npz.files:
            raise CodecError("not a stored asset value: no __meta__ member")
        try:
            meta = json.loads(npz[_META].tobytes().decode(), object_hook=_json_hook)
        except (ValueError, UnicodeDecodeError) as exc:  # also: an object (pickled) member refused
            raise CodecError(f"unreadable metadata: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise CodecError(f"wrong format {meta.get('format')!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise CodecError(f"unsupported format version {meta.get('version')!r} (reads {FORMAT_VERSION})")
        cls = TYPES.get(meta.get("type"))
        if cls is None:
            raise CodecError(f"unknown stored type {meta.get('type')!r}")
        kwargs: dict[str, Any] = {}
        try:
            for name, spec in meta["fields"].items():
                if spec["kind"] == "csr":
                    kwargs[name] = sp.csr_matrix(
                        (npz[f"{name}.data"], npz[f"{name}.indices"], npz[f"{name}.indptr"]),
                        shape=tuple(spec["shape"]),
                    )
                elif spec["kind"] == "array":
                    kwargs[name] = npz[name]
                else:
                    kwargs[name] = spec["value"]
        except (KeyError, ValueError) as exc:
            raise CodecError(f"stored {cls.__name__} is incomplete: {exc}") from exc
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in kwargs.items() if k in known})
    except TypeError as exc:
        raise CodecError(f"stored {cls.__name__} lacks fields: {exc}") from exc
