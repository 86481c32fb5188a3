"""The run coordinator of the local instance: Dagster's run queue, with pool limits known up front.

Why (Dagster 1.13.27, `concurrency.pools.granularity: run`): the QueuedRunCoordinatorDaemon reads
the instance's configured pools at the start of a dequeue pass, and only then writes the default
limit (`pools.default_limit`) for a pool it has never seen. In that first pass the pool counts as
unlimited, so every queued run that needs it is launched at once: a backfill of two hours, or two
launchRun calls, submitted to a fresh DAGSTER_HOME trained side by side (issue 13, point 2). From
the next pass on the limit holds.

`PoolLimitQueuedRunCoordinator` writes the default limit of every pool a run needs when the run is
submitted, i.e. before any dequeue pass can see the run. Everything else is QueuedRunCoordinator:
the same config, and the same daemon dequeues. Used by the repository's dagster.yaml:

    run_coordinator:
      module: batchrec_dagster.run_queue
      class: PoolLimitQueuedRunCoordinator
"""

from __future__ import annotations

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext


def ensure_pool_limits(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """Give each pool the run needs its default limit if it has no limit yet; returns those pools."""
    default_limit = instance.global_op_concurrency_default_limit
    pools = run.run_op_concurrency.all_pools if run.run_op_concurrency else None
    storage = instance.event_log_storage
    if default_limit is None or not pools or not storage.supports_global_concurrency_limits:
        return []
    configured = storage.get_concurrency_keys()
    missing = sorted(pool for pool in pools if pool not in configured)
    for pool in missing:
        # the daemon's own call; only for pools without a limit, so one set by hand stays
        storage.initialize_concurrency_limit_to_default(pool)
    return missing


class PoolLimitQueuedRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator that sets the default limit of a run's pools before queueing it."""

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        ensure_pool_limits(self._instance, context.dagster_run)
        return super().submit_run(context)
