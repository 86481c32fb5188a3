"""Retention: delete model artifacts that no registry entry references, and stored asset values
(the IO managers' `assets` folder) that nothing will read again.

Failed registrations, runs killed after their upload and blocked checks leave artifacts behind
that nothing will ever serve. An artifact is deleted only when (a) no entry in `models` names it,
whatever the entry's state, and (b) it is older than BATCHREC_RETENTION_MIN_AGE_HOURS, which must
exceed the longest run: a run uploads its artifact before `model_registry_entry` registers it, so a
young unreferenced artifact may be one that is about to be registered. Write probes left by a
killed run count as unreferenced too. In `prod` the job only reports unless told to delete
(BATCHREC_RETENTION_DRY_RUN=false or run config `dry_run: false`).

Stored asset values (`<asset>/<partition>/<run id>.npz`, defs/io_managers.py) are kept when they are
younger than the same minimum age (a run, or a re-execution of it, may still load them), when they
are the newest hour's `raw_repositories` (the snapshot the next hour extends, sources/snapshot.py), or when
they are the `recvae_model` value of a run that registered a model (what `model_registry_entry`
loads when it is materialized alone). Everything else is what one past run handed to the next step
of that run: an hour's full star snapshot, matrix and split, never read again.

Guard: when the registry references none of the stored artifacts, nothing is deleted and the run
fails (`registry_guard`). A typo in MONGODB_DATABASE (an empty registry) or a store that belongs to
another deployment would otherwise make every artifact an orphan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from batchrec_dagster.storage.blobs import BlobInfo, BlobNotFoundError, BlobStore

SNAPSHOT_ASSET = "raw_repositories"
MODEL_ASSET = "recvae_model"


@dataclass
class RetentionReport:
    dry_run: bool
    kept_referenced: int = 0
    kept_young: int = 0
    orphans: list[BlobInfo] = field(default_factory=list)  # deleted, or to delete in a dry run
    errors: list[str] = field(default_factory=list)

    @property
    def orphan_bytes(self) -> int:
        return sum(b.size_bytes for b in self.orphans)


def plan_retention(blobs: list[BlobInfo], referenced: set[str], *, now: datetime,
                   min_age: timedelta, dry_run: bool) -> RetentionReport:
    """Which blobs are orphans old enough to delete (pure: no I/O)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    report = RetentionReport(dry_run=dry_run)
    for blob in blobs:
        if blob.name in referenced:
            report.kept_referenced += 1
        elif now - blob.updated < min_age:
            report.kept_young += 1
        else:
            report.orphans.append(blob)
    return report


def apply_retention(store: BlobStore, report: RetentionReport) -> RetentionReport:
    """Delete the planned orphans (unless dry run); a blob already gone is not an error."""
    if report.dry_run:
        return report
    for blob in report.orphans:
        try:
            store.delete(blob.name)
        except BlobNotFoundError:
            continue
        except Exception as exc:  # keep going: one undeletable object must not keep the rest
            report.errors.append(f"{blob.name}: {type(exc).__name__}: {exc}")
    return report


def registry_guard(artifacts: list[BlobInfo], referenced: set[str], where: str) -> str | None:
    """Why retention must not run (None when it may): the store holds artifacts and the registry
    names none of them."""
    if not artifacts or referenced & {b.name for b in artifacts}:
        return None
    return (f"the registry references none of the {len(artifacts)} artifacts in {where} (it names "
            f"{len(referenced)} artifacts in all); is MONGODB_DATABASE (or the bucket) the "
            f"deployment's? Nothing was deleted. If every artifact really is an orphan, run with "
            f"config force: true")


def needed_values(blobs: list[BlobInfo], registered_runs: set[str]) -> set[str]:
    """The stored asset values the pipeline may still read, whatever their age: the newest hour's
    snapshot, the recvae_model value of each registered run, and files that are not values."""
    def parts(name: str) -> tuple[str, str, str] | None:  # (asset, partition, run id)
        segments = name.split("/")
        if len(segments) != 3 or not segments[2].endswith(".npz"):
            return None
        return segments[0], segments[1], segments[2].removesuffix(".npz")

    parsed = {b.name: parts(b.name) for b in blobs}
    snapshots = [p[1] for p in parsed.values() if p is not None and p[0] == SNAPSHOT_ASSET]
    # partition keys (2026-03-01-20:00) sort in time order as strings
    newest_snapshot = max(snapshots, default=None)
    return {name for name, p in parsed.items()
            if p is None or (p[0] == SNAPSHOT_ASSET and p[1] == newest_snapshot)
            or (p[0] == MODEL_ASSET and p[2] in registered_runs)}
