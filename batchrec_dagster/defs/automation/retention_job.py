"""The Dagster wiring of retention (registry/retention.py): a job, run daily by a schedule.

The op has no value to store: its output is `Nothing` and carries the report as metadata. (An
`int` output went to the deployment's typed `io_manager`, which stores the four asset types only,
so every run failed after it had deleted: issue 18, D2.)
"""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field

from batchrec_dagster.defs.resources import ArtifactStoreResource, MongoResource, RunDefaults
from batchrec_dagster.registry.models import MODELS, referenced_files, registered_run_ids
from batchrec_dagster.registry.retention import (
    RetentionReport,
    apply_retention,
    needed_values,
    plan_retention,
    registry_guard,
)
from batchrec_dagster.settings import PARTITION_TIMEZONE
from batchrec_dagster.storage.blobs import BlobStore

RETENTION_SCHEDULE_NAME = "artifact_retention_schedule"
# a day of hourly models: a warm run continues the newest usable one, so an older checkpoint is read
# only when every newer model of the day is banned or incompatible (and then Adam starts afresh)
CHECKPOINTS_KEPT = 24


class RetentionConfig(dg.Config):
    SETTINGS_DEFAULTS: ClassVar[dict[str, str]] = {"dry_run": "retention_reports_only",
                                                   "min_age_hours": "retention_min_age_hours"}

    dry_run: bool | None = Field(default=None,
                                 description="Only report the orphans (default: BATCHREC_RETENTION_DRY_RUN, "
                                             "else true in prod and false in local).")
    min_age_hours: float | None = Field(default=None, ge=1,
                                        description="Default: BATCHREC_RETENTION_MIN_AGE_HOURS.")
    checkpoints_kept: int = Field(default=CHECKPOINTS_KEPT, ge=1,
                                  description="Keep the training checkpoints (Adam's moments, twice a "
                                              "model's size) of this many newest registry entries only; "
                                              "a warm run reads its starting model's.")
    force: bool = Field(default=False,
                        description="Run even when the registry references none of the stored artifacts "
                                    "(normally a wrong MONGODB_DATABASE or bucket: the run then fails).")


def _report_metadata(prefix: str, report: RetentionReport) -> dict[str, Any]:
    return {
        f"{prefix}orphans": len(report.orphans),
        f"{prefix}orphan_bytes": report.orphan_bytes,
        f"{prefix}kept_referenced": report.kept_referenced,
        f"{prefix}kept_young": report.kept_young,
        f"{prefix}orphan_names": dg.MetadataValue.json([b.name for b in report.orphans[:200]]),
    }


def _log(context: dg.OpExecutionContext, what: str, store: BlobStore, report: RetentionReport,
         kept: str, min_age_hours: float) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    context.log.info(f"{verb} {len(report.orphans)} {what} ({report.orphan_bytes} bytes) in "
                     f"{store.location}; kept {report.kept_referenced} {kept} and {report.kept_young} "
                     f"younger than {min_age_hours:g} h")
    for error in report.errors:
        context.log.error(f"could not delete {error}")


@dg.op(out=dg.Out(dg.Nothing),
       description="Delete (or, in a dry run, list) artifacts that no registry entry references, training "
                   "checkpoints of all but the checkpoints_kept newest entries, and stored asset values "
                   "that nothing reads again, older than min_age_hours.")
def delete_orphan_artifacts(context: dg.OpExecutionContext, config: RetentionConfig, mongo: MongoResource,
                            artifact_store: ArtifactStoreResource, run_defaults: RunDefaults,
                            io_manager: dg.ResourceParam[Any]) -> None:
    config = run_defaults.fill(config)
    store, values = artifact_store.get_store(), io_manager.blob_store()
    # list the stores before reading the registry: an artifact registered in between is then
    # referenced (never deleted), not listed-but-unknown
    artifacts, stored_values = list(store.list_blobs()), list(values.list_blobs())
    db = mongo.get_database()
    referenced = referenced_files(db, checkpoints_kept=config.checkpoints_kept)
    refused = registry_guard(artifacts, referenced, f"{store.location} (registry {db.name}.{MODELS})")
    if refused and not config.force:
        raise dg.Failure(description=refused)
    now, min_age = datetime.now(UTC), timedelta(hours=config.min_age_hours)
    report = apply_retention(store, plan_retention(artifacts, referenced, now=now, min_age=min_age,
                                                   dry_run=config.dry_run))
    values_report = apply_retention(values, plan_retention(
        stored_values, needed_values(stored_values, registered_run_ids(db)), now=now, min_age=min_age,
        dry_run=config.dry_run))
    _log(context, "orphan artifacts", store, report, "referenced", config.min_age_hours)
    _log(context, "stored asset values", values, values_report, "needed (newest snapshot, registered runs)",
         config.min_age_hours)
    errors = report.errors + values_report.errors
    if errors:
        raise dg.Failure(description=f"{len(errors)} files could not be deleted")
    context.add_output_metadata({"dry_run": report.dry_run, **_report_metadata("", report),
                                 **_report_metadata("asset_values_", values_report)})


@dg.job(description="Retention: orphan model artifacts (no registry entry) and stored asset values that "
                    "nothing reads again, older than BATCHREC_RETENTION_MIN_AGE_HOURS, are deleted; a dry "
                    "run in prod by default.",
        tags={"batchrec/maintenance": "retention"})
def artifact_retention_job() -> None:
    delete_orphan_artifacts()


artifact_retention_schedule = dg.ScheduleDefinition(
    name=RETENTION_SCHEDULE_NAME, job=artifact_retention_job, cron_schedule="30 3 * * *",
    execution_timezone=PARTITION_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily at 03:30 KST: retention of artifacts and asset values (a report only in prod "
                "unless configured).")
