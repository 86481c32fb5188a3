"""Runs launched from the asset graph (Materialize, or a backfill) train like scheduled runs
(issue 18): Dagster runs them as its implicit `__ASSET_JOB`, which has no tags, so they lacked the
`dagster-k8s/config` resources that runs of `hourly_training_job` carry. The run queue
(run_queue.PoolLimitQueuedRunCoordinator) gives every run that needs the training pool those tags;
the pool itself comes from `recvae_model`, whichever job runs it.

The same through a running webserver and daemon (Materialize on the asset graph, and an asset
backfill, each queued and tagged) is checked in test_end_to_end.py, whose first run and backfill
are exactly those.
"""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.defs.instance.run_queue import add_training_tags
from batchrec_dagster.defs.jobs import ASSET_NAMES, hourly_training_job
from batchrec_dagster.settings import load_settings
from batchrec_dagster.training.k8s_resources import K8S_CONFIG_TAG, TRAINING_POOL
from tests.harness.dagster_services import IMPLICIT_JOB

TRAINING_TAGS = dict(hourly_training_job.tags)


def _submit(instance: dg.DagsterInstance, assets: tuple[str, ...], tags: dict[str, str] | None = None
            ) -> dg.DagsterRun:
    """A run of the implicit asset job for a selection, as Dagit creates it, and what the run queue
    adds at submission. (Queued for real through a code location: test_end_to_end.py.)"""
    job = build_definitions(load_settings({})).resolve_implicit_global_asset_job_def()
    run = instance.create_run_for_job(job, asset_selection=frozenset(dg.AssetKey(a) for a in assets),
                                      tags={"dagster/partition": "2026-03-01-20:00", **(tags or {})})
    add_training_tags(instance, run)
    stored = instance.get_run_by_id(run.run_id)
    assert stored is not None
    return stored


def test_a_training_run_of_the_implicit_asset_job_gets_the_training_tags_and_pool():
    assert K8S_CONFIG_TAG in TRAINING_TAGS
    with dg.instance_for_test() as instance:
        run = _submit(instance, ASSET_NAMES)
        assert run.job_name == IMPLICIT_JOB
        assert run.run_op_concurrency.all_pools == {TRAINING_POOL}
        assert {k: run.tags.get(k) for k in TRAINING_TAGS} == TRAINING_TAGS

        raw_only = _submit(instance, ("raw_repositories",))  # trains nothing: no pool, no training pod
        assert not (raw_only.run_op_concurrency and raw_only.run_op_concurrency.all_pools)
        assert K8S_CONFIG_TAG not in raw_only.tags

        own = '{"container_config": {"resources": {"requests": {"cpu": "16"}}}}'
        chosen = _submit(instance, ("recvae_model",), tags={K8S_CONFIG_TAG: own})  # set in the dialog
        assert chosen.tags[K8S_CONFIG_TAG] == own
