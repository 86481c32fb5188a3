"""Runs launched from the asset graph (Materialize, or a backfill) train like scheduled runs
(issue 18): Dagster runs them as its implicit `__ASSET_JOB`, which has no tags, so they lacked the
`dagster-k8s/config` resources that runs of `hourly_training_job` carry. The run queue
(run_queue.PoolLimitQueuedRunCoordinator) gives every run that needs the training pool those tags;
the pool itself comes from `recvae_model`, whichever job runs it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from batchrec_dagster.defs.automation.star_arrivals import latest_closed_partition
from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.defs.instance.run_queue import add_training_tags
from batchrec_dagster.defs.jobs import ASSET_NAMES
from batchrec_dagster.settings import load_settings
from batchrec_dagster.training.k8s_resources import K8S_CONFIG_TAG, TRAINING_POOL
from tests.defs.test_end_to_end import hour_before, run_config
from tests.harness.dagster_services import LOCATION, REPOSITORY, ServiceError, wait_for
from tests.harness.dagster_stack import dagster_stack

IMPLICIT_JOB = "__ASSET_JOB"
SETTINGS = load_settings({})
TRAINING_TAGS = dict(build_definitions(SETTINGS).resolve_job_def("hourly_training_job").tags)


def _submit(instance: dg.DagsterInstance, assets: tuple[str, ...], tags: dict[str, str] | None = None
            ) -> dg.DagsterRun:
    """A run of the implicit asset job for a selection, as Dagit creates it, and what the run queue
    adds at submission. (Queueing it for real needs a code location: the test below.)"""
    job = build_definitions(SETTINGS).resolve_implicit_global_asset_job_def()
    run = instance.create_run_for_job(job, asset_selection=frozenset(dg.AssetKey(a) for a in assets),
                                      tags={"dagster/partition": "2026-03-01-20:00", **(tags or {})})
    add_training_tags(instance, run, TRAINING_TAGS)
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


def _launch_implicit(services, assets: tuple[str, ...], partition_key: str) -> str:
    """Dagit's Materialize on the asset graph: launchRun of __ASSET_JOB with an asset selection."""
    data = services.graphql("""
        mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }""",
                            {"params": {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                     "jobName": IMPLICIT_JOB, "assetSelection": [{"path": [a]} for a in assets]},
        "runConfigData": run_config(),
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition_key}]},
    }})["launchRun"]
    if data["__typename"] != "LaunchRunSuccess":
        raise ServiceError(f"launchRun failed: {data}")
    return data["run"]["runId"]


def _pools_and_tags(services, run_id: str) -> tuple[list[str], dict[str, str]]:
    run = services.graphql("""query R($id: ID!) { runOrError(runId: $id) { ... on Run {
        jobName allPools tags { key value } } } }""", {"id": run_id})["runOrError"]
    assert run["jobName"] == IMPLICIT_JOB
    return run["allPools"], {t["key"]: t["value"] for t in run["tags"]}


@pytest.mark.slow
def test_materialize_and_backfill_from_the_asset_graph_carry_the_training_tags(
        tmp_path: Path, mongo_server_uri: str) -> None:
    latest = latest_closed_partition(datetime.now(UTC))[0]
    with dagster_stack(tmp_path, mongo_server_uri, daemon=False) as stack:
        services = stack.services
        materialized = _launch_implicit(services, ASSET_NAMES, hour_before(latest, 2))
        pools, tags = _pools_and_tags(services, materialized)
        assert pools == [TRAINING_POOL]
        assert {k: tags.get(k) for k in TRAINING_TAGS} == TRAINING_TAGS

        backfill_id = services.launch_backfill(list(ASSET_NAMES), [hour_before(latest, 1)], run_config())
        services.start_daemon()  # the backfill daemon creates the run
        # created first (NOT_STARTED), then submitted to the run queue, which tags it
        backfill = wait_for("the backfill's run to be queued",
                            lambda: ((b := services.backfill(backfill_id))["runs"]
                                     and b["runs"][0]["status"] != "NOT_STARTED" and b),
                            timeout_s=180, interval_s=1, on_timeout=services.logs)
        pools, tags = _pools_and_tags(services, backfill["runs"][0]["runId"])
        assert pools == [TRAINING_POOL] and tags.get("dagster/backfill") == backfill_id
        assert {k: tags.get(k) for k in TRAINING_TAGS} == TRAINING_TAGS
        # let both finish (one at a time: the pool), so that nothing is cut off when the stack stops
        runs = [services.wait_run(run_id, timeout_s=600)
                for run_id in (materialized, backfill["runs"][0]["runId"])]
        assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], \
            "\n".join(services.run_errors(r["runId"]) for r in runs)
