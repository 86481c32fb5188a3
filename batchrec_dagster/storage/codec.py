"""The typed storage format of the asset values in values.py: one .npz file, never a pickle.

Arrays are stored as npy members (read back with allow_pickle=False, so object arrays are refused
on both sides), a CSR matrix as its three arrays plus its shape, and everything else (scalars,
dicts, lists, datetimes) as JSON in a `__meta__` member that also names the dataclass. Loading an
unknown type, a newer format version or a member that is missing raises CodecError, and so does
any other undecodable value: a file truncated or with a bit flipped fails somewhere inside
zipfile, zlib or NumPy's header parser, each with its own exception type (BadZipFile, zlib.error,
tokenize.TokenError, ...), and a caller must be able to catch one type (issue 18, D1).

String arrays (object arrays of str, or fixed-width unicode) are stored as their UTF-8 bytes plus
n+1 offsets and read back as object arrays: a fixed-width array costs 4 bytes per character of the
*longest* string for every element, so one 250,000-character name among 5,000 cost 5 GB (version
2; version 1 files, which stored fixed-width arrays, are still read).
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from batchrec_dagster.storage.values import RawRepositories, TrainedModel, UserItemMatrix, VaeInput

FORMAT = "batchrec-asset"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_META = "__meta__"
# zlib level 1, not savez_compressed's 6: on a 4.6M-star snapshot level 6 took 4.1 s to write and
# level 1 0.9 s, for files 4% larger (42.7 against 44.2 MB; benchmarks/results/snapshot_costs.md).
# Every hour writes the whole snapshot, so this was most of what an hour's read cost beyond its stars.
COMPRESS_LEVEL = 1
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


def _encode_strings(name: str, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, offsets) of a 1-d string array; object arrays would otherwise need pickle."""
    if value.ndim != 1:
        raise CodecError(f"field {name!r}: only 1-d string arrays are stored")
    if value.dtype.kind == "O" and not all(isinstance(v, str) for v in value):
        raise CodecError(f"field {name!r} is an object array that is not strings")
    encoded = [v.encode("utf-8") for v in value.tolist()]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _decode_strings(utf8: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(utf8) \
            or np.any(np.diff(offsets) < 0):
        raise CodecError("string offsets do not match their bytes")
    data = utf8.tobytes()
    bounds = offsets.tolist()
    out = np.empty(len(bounds) - 1, dtype=object)
    out[:] = [data[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return out


def encode(value: Any) -> bytes:
    """The .npz bytes of one of the dataclasses in values.py."""
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
        elif isinstance(v, np.ndarray) and v.dtype.kind in "OU":
            arrays[f"{f.name}.utf8"], arrays[f"{f.name}.offsets"] = _encode_strings(f.name, v)
            fields[f.name] = {"kind": "strings"}
        elif isinstance(v, np.ndarray):
            arrays[f.name] = v
            fields[f.name] = {"kind": "array"}
        else:
            fields[f.name] = {"kind": "json", "value": v}
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "type": type_name, "fields": fields}
    try:
        meta_bytes = json.dumps(meta, default=_json_default, allow_nan=True).encode()
    except TypeError as exc:
        raise CodecError(f"{type_name} has a field that cannot be stored: {exc}") from exc
    return _npz_bytes({_META: np.frombuffer(meta_bytes, dtype=np.uint8), **arrays})


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (what np.load reads) written at COMPRESS_LEVEL; np.savez_compressed has no level."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as npz:
        for name, array in arrays.items():
            with npz.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode(data: bytes) -> Any:
    """The dataclass stored by `encode`; CodecError for anything that is not one."""
    try:
        return _decode(data)
    except CodecError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged bytes fail in zipfile/zlib/numpy in many ways
        raise CodecError(f"damaged stored asset value: {type(exc).__name__}: {exc}") from exc


def _decode(data: bytes) -> Any:
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
        if meta.get("version") not in _READABLE_VERSIONS:
            raise CodecError(f"unsupported format version {meta.get('version')!r} "
                             f"(reads {', '.join(map(str, _READABLE_VERSIONS))})")
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
                elif spec["kind"] == "strings":
                    kwargs[name] = _decode_strings(npz[f"{name}.utf8"], npz[f"{name}.offsets"])
                elif spec["kind"] == "array":
                    kwargs[name] = npz[name]
                else:
                    kwargs[name] = spec["value"]
        except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise CodecError(f"stored {cls.__name__} is incomplete: {exc}") from exc
    known = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in kwargs.items() if k in known})
    except TypeError as exc:
        raise CodecError(f"stored {cls.__name__} lacks fields: {exc}") from exc
