"""The code location: every asset, check, job, schedule, sensor and resource of batchrec."""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.assets import ASSETS
from batchrec_dagster.checks import ASSET_CHECKS
from batchrec_dagster.freshness import apply_model_freshness
from batchrec_dagster.jobs import hourly_training_job
from batchrec_dagster.resources import build_resources
from batchrec_dagster.schedules import SCHEDULES
from batchrec_dagster.sensors import SENSORS

defs = dg.Definitions(
    assets=apply_model_freshness(ASSETS),
    asset_checks=ASSET_CHECKS,
    jobs=[hourly_training_job],
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=build_resources(),
    # one process per run, not one per step: the steps form a chain, and each step process
    # would pay torch's import again
    executor=dg.in_process_executor,
)
