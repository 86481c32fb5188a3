"""One verified local copy of each served file (artifact, index), which every worker maps.

`batchrec serve --workers N` starts N processes that each load the served model. Read into
memory, the weights would cost each of them the whole artifact (3.2 GB at 10^6 repositories).
Instead the first worker to need a file downloads it (`storage.blobs.read_verified`: size and
sha256 against the registry entry) into this folder under its sha256, and every worker, the
first included, checks the local file's size and sha256 again before it maps it
(`recvae.load_artifact_file`, faiss's mmap read): the pages are the page cache's, shared by all
workers, and counted once.

A file is published with `os.link` (it fails when the name exists), so all workers map the same
inode; a lock per file keeps N workers from downloading it N times at once. Files are read-only
(0444) in a folder only the server's user can write (0700). A file no worker has touched for
`keep_seconds` is removed by the next load: a worker still mapping it keeps its pages until it
unmaps them (Linux frees an unlinked file's blocks after the last mapping goes).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchrec_dagster.storage.blobs import ArtifactMismatchError, BlobStore, read_verified

log = logging.getLogger("batchrec.serving")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
KEEP_SECONDS = 3600.0  # a file unused this long goes (longer than any load, so no peer loses it)


class LocalCopies:
    def __init__(self, folder: str | os.PathLike[str], keep_seconds: float = KEEP_SECONDS):
        self.folder = Path(folder)
        self.keep_seconds = keep_seconds

    def path(self, store: BlobStore, name: str, record: Mapping[str, Any], suffix: str) -> Path:
        """The verified local copy of `store`'s `name`, whose size and sha256 are `record`'s
        `size_bytes` and `sha256`. Raises what `read_verified` raises, and ArtifactMismatchError
        when the local file is not the recorded one (it is then removed: the next try downloads)."""
        sha256, size = record.get("sha256"), record.get("size_bytes")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise ArtifactMismatchError(f"{name}: recorded sha256 {sha256!r} is not a sha256")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / f"{sha256}{suffix}"
        with _locked(self.folder / f".{sha256}.lock"):
            if not path.exists():
                data = read_verified(store, name, size_bytes=size, sha256=sha256)
                _publish(path, data)
                del data
            os.utime(path)  # in use: not pruned by another worker
        problems = file_mismatches(path, size_bytes=size, sha256=sha256)
        if problems:
            path.unlink(missing_ok=True)
            raise ArtifactMismatchError(f"{path}: {'; '.join(problems)}")
        return path

    def prune(self) -> list[Path]:
        """Remove the copies (and locks) no load has touched for `keep_seconds`."""
        removed = []
        cutoff = time.time() - self.keep_seconds
        for path in self.folder.glob("*") if self.folder.is_dir() else ():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # another worker pruned it first
                continue
        if removed:
            log.info("removed %d local copies unused for %.0f s", len(removed), self.keep_seconds)
        return removed


def file_mismatches(path: Path, *, size_bytes: object, sha256: object) -> list[str]:
    """How the file differs from the recorded size and sha256 (read through the page cache, in
    chunks: no copy of the whole file in memory)."""
    actual = path.stat().st_size
    if actual != size_bytes:
        return [f"size {actual} bytes, recorded {size_bytes}"]
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return [] if digest == sha256 else [f"sha256 {digest}, recorded {sha256}"]


def _publish(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_bytes(data)
        tmp.chmod(0o444)
        os.link(tmp, path)  # fails if it exists: every worker maps the first published inode
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


class _locked:
    """An exclusive flock on `path` (created if missing), released on exit."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
