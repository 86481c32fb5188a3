"""Signed safetensors files: tensors plus a JSON `meta` header and a sha256 over both, never pickle.

Model artifacts (recvae.artifact) and training checkpoints (recvae.checkpoint) share this format:
safetensors' own header carries `meta` (canonical JSON with the file's format name and version)
and `sha256`, a digest over that metadata and every tensor's name, dtype, shape and bytes, so a
truncated, tampered or foreign file is refused before any of it is used.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import numpy as np
import safetensors.torch
import torch

# a header longer than this is not ours (string item ids of 10^6 repositories take ~30 MB)
MAX_HEADER = 1 << 30


def content_digest(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the canonical metadata and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.numpy().reshape(-1).view(np.uint8))  # the bytes in place: no copy of the weights
    return h.hexdigest()


def dump_signed(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    """The file's bytes; `meta` must be JSON-serializable."""
    header = {"meta": json.dumps(meta, sort_keys=True), "sha256": content_digest(meta, tensors)}
    return safetensors.torch.save(tensors, metadata=header)


class SignedFormat:
    """Reads one kind of signed file: its format name and version, and the error it raises."""

    def __init__(self, name: str, version: int, error: type[ValueError], what: str) -> None:
        self.name, self.version, self.error, self.what = name, version, error, what

    def header(self, data: bytes) -> dict[str, str]:
        """The safetensors `__metadata__` of a file that starts with `data` (its header at least)."""
        if len(data) < 8:
            raise self.error(f"{self.what} is truncated (no header)")
        (header_len,) = struct.unpack("<Q", data[:8])
        if header_len > MAX_HEADER:
            raise self.error(f"not a {self.what} (header too long)")
        if 8 + header_len > len(data):
            raise self.error(f"{self.what} is truncated (header runs past the end)")
        try:
            header = json.loads(data[8 : 8 + header_len])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self.error(f"{self.what} header is not valid JSON: {exc}") from exc
        raw = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(raw, dict) or "meta" not in raw or "sha256" not in raw:
            raise self.error(f"not a {self.what} (metadata missing)")
        return raw

    def meta(self, raw: dict[str, str]) -> dict[str, Any]:
        """The parsed `meta`, checked to be this format at this version."""
        try:
            meta = json.loads(raw["meta"])
        except json.JSONDecodeError as exc:
            raise self.error(f"{self.what} metadata is not valid JSON: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != self.name:
            raise self.error(f"not a {self.what} (wrong format name)")
        if meta.get("format_version") != self.version:
            raise self.error(f"unsupported {self.what} format version {meta.get('format_version')!r} "
                             f"(this library reads version {self.version})")
        return meta

    def verify(self, meta: dict[str, Any], raw: dict[str, str], tensors: dict[str, torch.Tensor]) -> None:
        if content_digest(meta, tensors) != raw["sha256"]:
            raise self.error(f"{self.what} checksum mismatch: the file was modified or corrupted")

    def load(self, data: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(meta, tensors) of verified bytes; `self.error` for anything that cannot be trusted."""
        data = bytes(data)
        raw = self.header(data)
        meta = self.meta(raw)
        try:
            tensors = safetensors.torch.load(data)
        except Exception as exc:  # safetensors raises its own error types for corrupt buffers
            raise self.error(f"{self.what} tensors cannot be read (truncated or corrupt): {exc}") from exc
        self.verify(meta, raw, tensors)
        return meta, tensors
