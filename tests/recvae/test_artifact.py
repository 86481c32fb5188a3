from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from recvae import (
    FORMAT_VERSION,
    ArtifactError,
    Recommender,
    RecVAE,
    RecVAEConfig,
    dump_artifact,
    load_artifact,
    load_artifact_file,
)

CFG = RecVAEConfig(hidden_dim=16, latent_dim=4, epochs=3)


def _recommender(item_ids: np.ndarray) -> Recommender:
    model = RecVAE(len(item_ids), CFG)
    return Recommender(model, item_ids, np.arange(len(item_ids), dtype=np.float32))


@pytest.mark.parametrize(
    "item_ids",
    [np.array([10**11, 7, 42, 3], dtype=np.int64), np.array(["a/b", "ü/ñ", "x", "y/z"])],
    ids=["int64", "str"],
)
def test_round_trip(item_ids: np.ndarray) -> None:
    rec = _recommender(item_ids)
    data = dump_artifact(rec, config=CFG, metrics={"ndcg@100": 0.25}, extra={"run": "r1"})
    art = load_artifact(data)
    assert art.format_version == FORMAT_VERSION
    assert art.config == CFG and art.metrics == {"ndcg@100": 0.25} and art.extra == {"run": "r1"}
    loaded = art.recommender
    assert np.array_equal(loaded.item_ids, item_ids) and loaded.item_ids.dtype.kind == item_ids.dtype.kind
    assert np.array_equal(loaded.item_popularity, rec.item_popularity)
    a, sa = rec.recommend([[0, 2], []], k=2)
    b, sb = loaded.recommend([[0, 2], []], k=2)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)


def _dump() -> bytes:
    return dump_artifact(_recommender(np.arange(6)), config=CFG, metrics={"ndcg@100": 0.1})


def test_truncated_rejected() -> None:
    data = _dump()
    for cut in (0, 5, 100, len(data) // 2, len(data) - 1):
        with pytest.raises(ArtifactError):
            load_artifact(data[:cut])


def test_tampered_payload_rejected() -> None:
    data = bytearray(_dump())
    data[-3] ^= 0x01  # a bit in the last tensor's bytes
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(bytes(data))


def _rewrite(data: bytes, edit) -> bytes:
    """Re-serialize with edited metadata, keeping the original checksum."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = safetensors.torch.load(data)
    meta = json.loads(header["meta"])
    tensors = edit(meta, tensors) or tensors
    return safetensors.torch.save(tensors, metadata={"meta": json.dumps(meta), "sha256": header["sha256"]})


def test_tampered_metadata_rejected() -> None:
    def bump(meta, tensors):
        meta["metrics"]["ndcg@100"] = 0.99

    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact(_rewrite(_dump(), bump))


def test_unknown_version_rejected() -> None:
    def future(meta, tensors):
        meta["format_version"] = FORMAT_VERSION + 1

    with pytest.raises(ArtifactError, match="version"):
        load_artifact(_rewrite(_dump(), future))


def test_mismatched_contents_rejected() -> None:
    """A consistent checksum over inconsistent contents (weights for another item count)."""
    from recvae.signed import content_digest

    def shrink(meta, tensors):
        tensors = dict(tensors)
        tensors["model.decoder.bias"] = torch.zeros(3)
        return tensors

    data = _rewrite(_dump(), shrink)
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["meta"])
    tensors = safetensors.torch.load(data)
    resigned = safetensors.torch.save(
        tensors, metadata={"meta": json.dumps(meta), "sha256": content_digest(meta, tensors)}
    )
    with pytest.raises(ArtifactError, match="do not match"):
        load_artifact(resigned)


def test_foreign_safetensors_and_garbage_rejected() -> None:
    with pytest.raises(ArtifactError):
        load_artifact(safetensors.torch.save({"w": torch.zeros(2)}))
    with pytest.raises(ArtifactError):
        load_artifact(b"\x00" * 64)
    with pytest.raises(ArtifactError):
        load_artifact(b"not an artifact at all, just text")


def test_artifact_is_plain_safetensors() -> None:
    # Any safetensors reader can open it: tensors only, no pickled objects.
    names = set(safetensors.torch.load(_dump()))
    assert {"item_ids", "item_popularity", "model.decoder.weight"} <= names
    assert all(n.startswith("model.") or n in {"item_ids", "item_popularity"} for n in names)


def _mapped_files() -> set[str]:
    return {line.split(maxsplit=5)[5].strip() for line in Path("/proc/self/maps").read_text().splitlines()
            if len(line.split(maxsplit=5)) == 6}


def test_file_round_trip_maps_the_weights(tmp_path: Path) -> None:
    """A file loads as its bytes do, and the weights are the file's mapped pages, not a copy."""
    rec = _recommender(np.array([5, 3, 9, 1], dtype=np.int64))
    path = tmp_path / "model.safetensors"
    path.write_bytes(dump_artifact(rec, config=CFG, metrics={"ndcg@100": 0.2}))
    loaded = load_artifact_file(path).recommender
    assert np.array_equal(loaded.item_ids, rec.item_ids)
    a, sa = rec.recommend([[0, 2], []], k=2)
    b, sb = loaded.recommend([[0, 2], []], k=2)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert str(path) in _mapped_files()
    weight = loaded.model.decoder.weight
    start = weight.data_ptr()
    spans = [line.split()[0].split("-") for line in Path("/proc/self/maps").read_text().splitlines()
             if line.rstrip().endswith(str(path))]
    assert any(int(lo, 16) <= start < int(hi, 16) for lo, hi in spans)


def test_file_truncated_or_tampered_rejected(tmp_path: Path) -> None:
    data = _dump()
    # one file per case: a file is mapped while it is checked, and rewriting a mapped file in place
    # can raise SIGBUS on pages past its new end
    for cut in (0, 5, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"model-{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(ArtifactError):
            load_artifact_file(path)
    tampered = bytearray(data)
    tampered[-3] ^= 0xFF
    path = tmp_path / "model-tampered.safetensors"
    path.write_bytes(bytes(tampered))
    with pytest.raises(ArtifactError, match="checksum"):
        load_artifact_file(path)
