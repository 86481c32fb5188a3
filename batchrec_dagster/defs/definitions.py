"""The code location: the one assembly of batchrec's `dg.Definitions`.

`dagster dev`, the code server, the CLI's `materialize` and the tests all resolve the job from
`build_definitions(settings)`, so what runs in-process is exactly what the daemon runs. Every
object that depends on a setting (the partitions, the jobs' tags, the schedules' minutes, the
sensors' intervals, the freshness window, the resources) is built here from the argument; `defs`,
the object the code server imports, is the one place that reads this process's settings.
"""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.defs.assets import build_assets
from batchrec_dagster.defs.automation.freshness import freshness_window, model_freshness_policy
from batchrec_dagster.defs.automation.retention_job import artifact_retention_job, artifact_retention_schedule
from batchrec_dagster.defs.automation.schedules import build_schedules
from batchrec_dagster.defs.automation.sensors import build_sensors
from batchrec_dagster.defs.checks import build_checks
from batchrec_dagster.defs.deployments import build_resources
from batchrec_dagster.defs.jobs import hourly_training_job, model_evaluation_job
from batchrec_dagster.defs.partitions import hourly_partitions
from batchrec_dagster.deployments import deployment_of
from batchrec_dagster.settings import Settings, get_settings


def _with_store_kind(asset: dg.AssetsDefinition, kind: str) -> dg.AssetsDefinition:
    """An asset that uses the artifact store shows that store's kind in Dagit (gcs, filesystem)."""
    if "artifact_store" not in asset.required_resource_keys:
        return asset
    return asset.map_asset_specs(lambda spec: spec.merge_attributes(kinds={kind}))


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every asset, check, job, schedule, sensor and resource, on the deployment of `settings`."""
    partitions = hourly_partitions(settings)
    kind = deployment_of(settings).store_kind
    training, evaluation = hourly_training_job(settings.training_device), model_evaluation_job()
    assets = build_assets(partitions, model_freshness_policy(freshness_window(settings)))
    return dg.Definitions(
        assets=[_with_store_kind(asset, kind) for asset in assets],
        asset_checks=build_checks(partitions),
        jobs=[training, evaluation, artifact_retention_job],
        schedules=[*build_schedules(settings, training, evaluation), artifact_retention_schedule],
        sensors=build_sensors(settings, training, partitions),
        resources=build_resources(settings),
        # one process per run, not one per step: the steps form a chain, and each step process
        # would pay torch's import again
        executor=dg.in_process_executor,
    )


defs = build_definitions(get_settings())  # the code location's entry point: the settings, read once
