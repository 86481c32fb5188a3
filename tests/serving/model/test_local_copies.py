"""serving.model.local_copies: one verified local copy per file, reused, re-checked before use,
removed when it is not the recorded bytes or unused for long (a real LocalBlobStore, real files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from batchrec_dagster.serving.model.local_copies import LocalCopies
from batchrec_dagster.storage.blobs import ArtifactMismatchError, LocalBlobStore


def _stored(tmp_path: Path, data: bytes) -> tuple[LocalBlobStore, dict]:
    store = LocalBlobStore(tmp_path / "store")
    blob = store.put_new("models/m.safetensors", data)
    return store, {"size_bytes": blob.size_bytes, "sha256": blob.sha256}


def test_a_copy_is_made_once_read_only_and_reused(tmp_path: Path) -> None:
    store, record = _stored(tmp_path, b"weights" * 1000)
    copies = LocalCopies(tmp_path / "cache")
    first = copies.path(store, "models/m.safetensors", record, ".safetensors")
    assert first == tmp_path / "cache" / f"{record['sha256']}.safetensors"
    assert first.read_bytes() == b"weights" * 1000
    assert (first.stat().st_mode & 0o777) == 0o444
    store.delete("models/m.safetensors")  # the second load does not download again
    again = copies.path(store, "models/m.safetensors", record, ".safetensors")
    assert again == first and again.stat().st_ino == first.stat().st_ino


def test_a_changed_local_copy_is_refused_removed_and_fetched_again(tmp_path: Path) -> None:
    store, record = _stored(tmp_path, b"weights" * 1000)
    copies = LocalCopies(tmp_path / "cache")
    path = copies.path(store, "models/m.safetensors", record, ".safetensors")
    path.chmod(0o644)
    path.write_bytes(b"W" + path.read_bytes()[1:])  # same size, other bytes
    with pytest.raises(ArtifactMismatchError, match="sha256"):
        copies.path(store, "models/m.safetensors", record, ".safetensors")
    assert not path.exists()
    refetched = copies.path(store, "models/m.safetensors", record, ".safetensors")
    assert refetched.read_bytes() == b"weights" * 1000


def test_a_recorded_sha256_that_is_not_one_is_refused_before_any_file(tmp_path: Path) -> None:
    store, record = _stored(tmp_path, b"weights")
    copies = LocalCopies(tmp_path / "cache")
    with pytest.raises(ArtifactMismatchError, match="not a sha256"):
        copies.path(store, "models/m.safetensors", {**record, "sha256": "../../etc/passwd"}, "")
    assert not (tmp_path / "cache").exists()


def test_prune_removes_copies_unused_for_long(tmp_path: Path) -> None:
    store, record = _stored(tmp_path, b"weights")
    copies = LocalCopies(tmp_path / "cache", keep_seconds=60)
    old = copies.path(store, "models/m.safetensors", record, ".safetensors")
    other, other_record = _stored(tmp_path / "b", b"other weights")
    fresh = copies.path(other, "models/m.safetensors", other_record, ".safetensors")
    past = time.time() - 120
    os.utime(old, (past, past))
    assert old in copies.prune()
    assert not old.exists() and fresh.exists()
