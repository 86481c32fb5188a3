"""The run coordinator of the local instance: Dagster's run queue, with pool limits known up front.

Why (Dagster 1.13.27, `concurrency.pools.granularity: run`): the QueuedRunCoordinatorDaemon reads
the instance's configured pools at the start of a dequeue pass, and only then writes the default
limit (`pools.default_limit`) for a pool it has never seen. In that first pass the pool counts as
unlimited, so every queued run that needs it is launched at once: a backfill of two hours, or two
launchRun calls, submitted to a fresh DAGSTER_HOME trained side by side (issue 13, point 2). From
the next pass on the limit holds.

`PoolLimitQueuedRunCoordinator` writes the default limit of every pool a run needs when the run is
submitted, i.e. before any dequeue pass can see the run (workarounds.ensure_pool_limits, with the
test that tells when Dagster no longer needs it). Instance config alone (`concurrency: pools:
default_limit`) is what has the gap, so the plain dg.QueuedRunCoordinator cannot replace this.

It also gives every run that trains the training run tags of `hourly_training_job` (the
`dagster-k8s/config` resources, k8s.py) when the run has none of its own. A backfill or a
Materialize launched from the asset graph runs as Dagster's implicit `__ASSET_JOB`, which has no
tags, and the asset backfill daemon creates its runs with the backfill's tags only: on Kubernetes
such a run trained with no resource request (issue 18). "Trains" is "needs the training pool",
which comes from `recvae_model` itself, so whichever job runs it is covered.

Everything else is QueuedRunCoordinator: the same config, and the same daemon dequeues. Used by the
repository's dagster.yaml and deploy/'s instances:

    run_coordinator:
      module: batchrec_dagster.defs.instance.run_queue
      class: PoolLimitQueuedRunCoordinator
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from batchrec_dagster.defs.instance.workarounds import ensure_pool_limits
from batchrec_dagster.settings import get_settings
from batchrec_dagster.training.k8s_resources import K8S_CONFIG_TAG, TRAINING_POOL, training_run_tags


def add_training_tags(instance: dg.DagsterInstance, run: dg.DagsterRun,
                      training_tags: dict[str, str]) -> dict[str, str]:
    """Give a run that needs the training pool the `training_tags` (hourly_training_job's) it lacks,
    unless it has a `dagster-k8s/config` tag of its own (set in the launch dialog, or by its job);
    returns them."""
    pools = run.run_op_concurrency.all_pools if run.run_op_concurrency else set()
    if TRAINING_POOL not in pools or K8S_CONFIG_TAG in run.tags:
        return {}
    tags = {key: value for key, value in training_tags.items() if key not in run.tags}
    if tags:
        instance.add_run_tags(run.run_id, tags)
    return tags


class PoolLimitQueuedRunCoordinator(dg.QueuedRunCoordinator):
    """QueuedRunCoordinator that sets the default limit of a run's pools, and gives a training run
    the training run tags, before queueing it.

    Dagster builds it from dagster.yaml in the webserver's and the daemon's processes: it is an
    entry point of its own, so it reads the settings (BATCHREC_TRAINING_DEVICE) once, when built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._training_tags = training_run_tags(get_settings().training_device)

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        ensure_pool_limits(self._instance, run)
        if add_training_tags(self._instance, run, self._training_tags):
            tagged = self._instance.get_run_by_id(run.run_id)
            context = dg.SubmitRunContext(tagged or run, context.workspace)
        return super().submit_run(context)
