"""Artifact retention: delete model artifacts that no registry entry references.

Failed registrations, runs killed after their upload and blocked checks leave artifacts behind
that nothing will ever serve. An artifact is deleted only when (a) no entry in `models` names it,
whatever the entry's state, and (b) it is older than BATCHREC_RETENTION_MIN_AGE_HOURS, which must
exceed the longest run: a run uploads its artifact before `model_registry_entry` registers it, so a
young unreferenced artifact may be one that is about to be registered. Write probes left by a
killed run count as unreferenced too. In `prod` the job only reports unless told to delete
(BATCHREC_RETENTION_DRY_RUN=false or run config `dry_run: false`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from batchrec_dagster.storage import BlobInfo, BlobNotFoundError, BlobStore


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
