"""Blob stores: a GCS bucket (prod) or a local folder (local deployment), for model artifacts and
for the asset values the IO managers keep (defs/io_managers.py).

Artifacts are write-once: `put_new` refuses to replace an existing object. On GCS that is an
`if_generation_match=0` precondition, checked by the server; the emulator used in tests ignores
preconditions, so an existence check runs first as well. Asset values are stored with `put`, which
replaces (a retried step writes its value again). Locally, both write a temporary file first, so a
reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from google.api_core import exceptions as gcs_exceptions
from google.cloud import storage as gcs

# under the deployment's root (BATCHREC_HOME/storage, or gs://GCS_BUCKET/GCS_PREFIX)
ARTIFACTS_FOLDER = "models"
ASSETS_FOLDER = "assets"


class BlobExistsError(FileExistsError):
    """The object already exists; artifacts are never overwritten."""


class BlobNotFoundError(FileNotFoundError):
    """No object under that name."""


class ArtifactMismatchError(ValueError):
    """The stored bytes are not the ones the registry (or the training run) recorded."""


@dataclass(frozen=True)
class BlobInfo:
    name: str
    updated: datetime  # UTC
    size_bytes: int


@dataclass(frozen=True)
class StoredBlob:
    name: str
    uri: str
    size_bytes: int
    sha256: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mismatches(data: bytes, *, size_bytes: object, sha256: object) -> list[str]:
    """How `data` differs from the recorded size and sha256 (empty when it is the recorded bytes)."""
    problems = []
    if len(data) != size_bytes:
        problems.append(f"size {len(data)} bytes, recorded {size_bytes}")
    digest = sha256_hex(data)
    if digest != sha256:
        problems.append(f"sha256 {digest}, recorded {sha256}")
    return problems


def read_verified(store: BlobStore, name: str, *, size_bytes: object, sha256: object) -> bytes:
    """The artifact's bytes, checked against the recorded size and sha256 before anyone parses them.

    BlobNotFoundError when it is missing, ArtifactMismatchError when it is not the recorded file."""
    data = store.read(name)
    problems = mismatches(data, size_bytes=size_bytes, sha256=sha256)
    if problems:
        raise ArtifactMismatchError(f"{store.uri(name)}: {'; '.join(problems)}")
    return data


class BlobStore(Protocol):
    location: str  # bucket name, or the local folder

    def put_new(self, name: str, data: bytes) -> StoredBlob: ...
    def put(self, name: str, data: bytes) -> StoredBlob: ...
    def read(self, name: str) -> bytes: ...
    def exists(self, name: str) -> bool: ...
    def uri(self, name: str) -> str: ...
    def list_blobs(self) -> Iterator[BlobInfo]: ...
    def delete(self, name: str) -> None: ...


PROBE_FOLDER = ".write-probe"


def probe_write(store: BlobStore, tag: str) -> None:
    """Write and delete a tiny object, so that a store we cannot write to fails a run before it
    trains for an hour, not after. Raises whatever the store raises, with the location named."""
    name = f"{PROBE_FOLDER}/{tag}"
    try:
        store.put_new(name, b"batchrec write probe")
        store.delete(name)
    except Exception as exc:
        raise PermissionError(f"cannot write to the artifact store {store.uri(name)}: "
                              f"{type(exc).__name__}: {exc}") from exc


def check_blob_name(name: str) -> str:
    """`name` if it is a relative path of plain segments, else ValueError, before any I/O and for
    every store alike. Names come from registry entries, which anyone who can write to MongoDB can
    edit: `..`, a leading `/`, empty segments and control characters are refused. (The GCS
    emulator drops the connection on such a name, and the client then retries for 2 minutes.)"""
    segments = name.split("/") if isinstance(name, str) else [""]
    if any(s in ("", ".", "..") for s in segments) or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise ValueError(f"blob name {name!r} escapes the store or is not a plain relative path")
    return name


class LocalBlobStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.location = str(self.root)

    def _path(self, name: str) -> Path:
        path = (self.root / check_blob_name(name)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"blob name {name!r} escapes the store")
        return path

    def uri(self, name: str) -> str:
        return self._path(name).as_uri()

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def _publish(self, name: str, data: bytes, *, replace: bool) -> StoredBlob:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")  # list_blobs skips these
        tmp.write_bytes(data)
        try:
            if replace:
                os.replace(tmp, path)
            else:  # link() fails if the target exists: the write-once check and the publish are one step
                os.link(tmp, path)
        except FileExistsError as exc:
            raise BlobExistsError(f"{self.uri(name)} already exists") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return StoredBlob(name, self.uri(name), len(data), sha256_hex(data))

    def put_new(self, name: str, data: bytes) -> StoredBlob:
        return self._publish(name, data, replace=False)

    def put(self, name: str, data: bytes) -> StoredBlob:
        return self._publish(name, data, replace=True)

    def read(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"{self.uri(name)} does not exist") from exc

    def list_blobs(self) -> Iterator[BlobInfo]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.endswith(".partial"):
                stat = path.stat()
                yield BlobInfo(path.relative_to(self.root).as_posix(),
                               datetime.fromtimestamp(stat.st_mtime, UTC), stat.st_size)

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"{self.uri(name)} does not exist") from exc


class GCSBlobStore:
    def __init__(self, client: gcs.Client, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = client.bucket(bucket)
        self.prefix = prefix.strip("/")
        self.location = bucket

    def _key(self, name: str) -> str:
        name = check_blob_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket.name}/{self._key(name)}"

    def exists(self, name: str) -> bool:
        return self.bucket.blob(self._key(name)).exists()

    def _upload(self, name: str, data: bytes, **preconditions: int) -> StoredBlob:
        self.bucket.blob(self._key(name)).upload_from_string(
            data, content_type="application/octet-stream", **preconditions)
        return StoredBlob(name, self.uri(name), len(data), sha256_hex(data))

    def put_new(self, name: str, data: bytes) -> StoredBlob:
        if self.exists(name):
            raise BlobExistsError(f"{self.uri(name)} already exists")
        try:
            return self._upload(name, data, if_generation_match=0)
        except gcs_exceptions.PreconditionFailed as exc:
            raise BlobExistsError(f"{self.uri(name)} already exists") from exc

    def put(self, name: str, data: bytes) -> StoredBlob:
        return self._upload(name, data)

    def read(self, name: str) -> bytes:
        try:
            return self.bucket.blob(self._key(name)).download_as_bytes()
        except gcs_exceptions.NotFound as exc:
            raise BlobNotFoundError(f"{self.uri(name)} does not exist") from exc

    def list_blobs(self) -> Iterator[BlobInfo]:
        start = len(self.prefix) + 1 if self.prefix else 0
        for blob in self.client.list_blobs(self.bucket, prefix=f"{self.prefix}/" if self.prefix else None):
            yield BlobInfo(blob.name[start:], blob.updated.astimezone(UTC), int(blob.size or 0))

    def delete(self, name: str) -> None:
        try:
            self.bucket.blob(self._key(name)).delete()
        except gcs_exceptions.NotFound as exc:
            raise BlobNotFoundError(f"{self.uri(name)} does not exist") from exc
