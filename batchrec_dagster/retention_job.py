"""The Dagster wiring of artifact retention (retention.py): a job, run daily by a schedule."""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from batchrec_dagster.registry import referenced_files
from batchrec_dagster.resources import ArtifactStoreResource, MongoResource
from batchrec_dagster.retention import apply_retention, plan_retention
from batchrec_dagster.settings import PARTITION_TIMEZONE, get_settings

RETENTION_SCHEDULE_NAME = "artifact_retention_schedule"


class RetentionConfig(dg.Config):
    dry_run: bool = Field(default=get_settings().retention_reports_only,
                          description="Only report the orphans (default: BATCHREC_RETENTION_DRY_RUN, "
                                      "else true in prod and false in local).")
    min_age_hours: float = Field(default=get_settings().retention_min_age_hours, ge=1)


@dg.op(description="Delete (or, in a dry run, list) artifacts that no registry entry references and "
                   "that are older than min_age_hours.")
def delete_orphan_artifacts(context: dg.OpExecutionContext, config: RetentionConfig, mongo: MongoResource,
                            artifact_store: ArtifactStoreResource) -> dg.Output[int]:
    store = artifact_store.get_store()
    # list the store before reading the registry: an artifact registered in between is then
    # referenced (never deleted), not listed-but-unknown
    blobs = list(store.list_blobs())
    referenced = referenced_files(mongo.get_database())
    report = plan_retention(blobs, referenced, now=datetime.now(UTC),
                            min_age=timedelta(hours=config.min_age_hours), dry_run=config.dry_run)
    apply_retention(store, report)
    verb = "would delete" if report.dry_run else "deleted"
    context.log.info(f"{verb} {len(report.orphans)} orphan artifacts ({report.orphan_bytes} bytes) in "
                     f"{store.location}; kept {report.kept_referenced} referenced and {report.kept_young} "
                     f"younger than {config.min_age_hours:g} h")
    for error in report.errors:
        context.log.error(f"could not delete {error}")
    if report.errors:
        raise dg.Failure(description=f"{len(report.errors)} orphan artifacts could not be deleted")
    return dg.Output(len(report.orphans), metadata={
        "dry_run": report.dry_run,
        "orphans": len(report.orphans),
        "orphan_bytes": report.orphan_bytes,
        "kept_referenced": report.kept_referenced,
        "kept_young": report.kept_young,
        "orphan_names": dg.MetadataValue.json([b.name for b in report.orphans[:200]]),
    })


@dg.job(description="Artifact retention: orphan model artifacts (no registry entry) older than "
                    "BATCHREC_RETENTION_MIN_AGE_HOURS are deleted; a dry run in prod by default.",
        tags={"batchrec/maintenance": "retention"})
def artifact_retention_job() -> None:
    delete_orphan_artifacts()


artifact_retention_schedule = dg.ScheduleDefinition(
    name=RETENTION_SCHEDULE_NAME, job=artifact_retention_job, cron_schedule="30 3 * * *",
    execution_timezone=PARTITION_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 KST: artifact retention (a report only in prod unless configured).")
