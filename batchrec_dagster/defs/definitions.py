"""The code location: the one assembly of batchrec's `dg.Definitions`.

`dagster dev`, the code server, the CLI's `materialize` and the tests all resolve the job from
`build_definitions`, so what runs in-process is exactly what the daemon runs. `defs` is the code
location's object, built from this process's settings; a caller with other settings (a test with
its own servers) builds the same definitions around them.
"""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.defs.assets import ASSETS
from batchrec_dagster.defs.assets.model_evaluation import model_evaluation
from batchrec_dagster.defs.automation.retention_job import artifact_retention_job, artifact_retention_schedule
from batchrec_dagster.defs.automation.schedules import SCHEDULES
from batchrec_dagster.defs.automation.sensors import SENSORS
from batchrec_dagster.defs.checks import ASSET_CHECKS
from batchrec_dagster.defs.deployments import artifact_store_kind, build_resources
from batchrec_dagster.defs.jobs import hourly_training_job, model_evaluation_job
from batchrec_dagster.settings import Settings


def _with_store_kind(asset: dg.AssetsDefinition, kind: str) -> dg.AssetsDefinition:
    """An asset that uses the artifact store shows that store's kind in Dagit (gcs, filesystem)."""
    if "artifact_store" not in asset.required_resource_keys:
        return asset
    return asset.map_asset_specs(lambda spec: spec.merge_attributes(kinds={kind}))


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """Every asset, check, job, schedule, sensor and resource, on the deployment of `settings`."""
    kind = artifact_store_kind(settings)
    return dg.Definitions(
        assets=[_with_store_kind(asset, kind) for asset in [*ASSETS, model_evaluation]],
        asset_checks=ASSET_CHECKS,
        jobs=[hourly_training_job, model_evaluation_job, artifact_retention_job],
        schedules=[*SCHEDULES, artifact_retention_schedule],
        sensors=SENSORS,
        resources=build_resources(settings),
        # one process per run, not one per step: the steps form a chain, and each step process
        # would pay torch's import again
        executor=dg.in_process_executor,
    )


defs = build_definitions()
