"""End to end, the way a user drives it: dagster-webserver + dagster-daemon against the project.

Everything goes through the webserver's GraphQL API, as Dagit sends it: stop the schedule,
Materialize all five assets of one partition on the asset graph, launch an asset backfill of three
hours, launch a run of hourly_training_job that fails a check, start the new-stars sensor. The first
run and the backfill's runs are Dagster's implicit asset job: the run queue gives each the training
pool and the training tags that runs of hourly_training_job carry (issue 18; this replaces the
stack test of test_asset_graph_runs.py, which started a stack of its own to launch the same two).
The instance is a temporary DAGSTER_HOME holding the shipped dagster.yaml, MongoDB is the test's
nx-27017 server, artifacts go to a temporary BATCHREC_HOME. Training is kept tiny by run
config; the model-quality gate is lowered by run config too (it is tested on its own elsewhere),
except in the run that must fail it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from batchrec_dagster.defs.automation.run_failures import RUN_FAILURES, run_partition
from batchrec_dagster.defs.automation.schedules import SCHEDULE_NAME
from batchrec_dagster.defs.automation.sensors import NEW_STARS_SENSOR_NAME
from batchrec_dagster.defs.automation.star_arrivals import latest_closed_partition
from batchrec_dagster.defs.jobs import ASSET_NAMES, hourly_training_job
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.registry.models import MODELS, entries_for_partition
from batchrec_dagster.storage.blobs import LocalBlobStore
from batchrec_dagster.storage.codec import decode
from batchrec_dagster.training.k8s_resources import K8S_CONFIG_TAG, TRAINING_POOL
from tests.harness.dagster_services import IMPLICIT_JOB, DagsterServices, wait_for
from tests.harness.dagster_stack import dagster_stack

pytestmark = pytest.mark.slow

BEATS_POPULARITY = "recvae_model_recvae_model_beats_popularity"
TRAINING_TAGS = dict(hourly_training_job.tags)
TINY = {"epochs": 3, "hidden_dim": 32, "latent_dim": 16, "batch_size": 128, "patience": None}


def run_config(min_margin: float = -1.0) -> dict:
    return {
        "ops": {"recvae_model": {"config": TINY},
                "vae_input": {"config": {"validation_users": 50}},
                BEATS_POPULARITY: {"config": {"min_margin": min_margin}}},
    }


class Clock:
    """Prints how long each phase took (shown with -s, and by pytest when the test fails)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, what: str) -> None:
        print(f"[e2e +{time.monotonic() - self.start:6.1f}s] {what}", flush=True)


def hour_before(key: str, hours: int) -> str:
    start, _ = partition_window(key)
    return latest_closed_partition(start - timedelta(hours=hours - 1))[0]


def assert_trains_like_the_hourly_job(dagster: DagsterServices, run_id: str) -> dict[str, str]:
    """A run of the implicit asset job that trains: the training pool and the training tags."""
    job, pools, tags = dagster.pools_and_tags(run_id)
    assert (job, pools) == (IMPLICIT_JOB, [TRAINING_POOL])
    assert {k: tags.get(k) for k in TRAINING_TAGS} == TRAINING_TAGS and K8S_CONFIG_TAG in TRAINING_TAGS
    return tags


@pytest.fixture
def services(tmp_path: Path, mongo_server_uri: str):
    clock = Clock()
    with dagster_stack(tmp_path, mongo_server_uri) as stack:
        clock("webserver loaded the code location, daemons healthy")
        yield stack.services, stack.db, stack.home, clock


def test_dagit_workflow_materialize_backfill_checks_sensor(services) -> None:
    dagster, db, home, clock = services
    store = LocalBlobStore(home / "storage" / "models")
    latest = latest_closed_partition(datetime.now(UTC))[0]
    backfill_keys = [hour_before(latest, n) for n in (3, 2, 1)]  # three consecutive closed hours
    single_key, failing_key = backfill_keys[0], hour_before(latest, 4)

    # the schedule runs by default once the code location loads; stop it as a user would
    assert dagster.instigator("schedule", SCHEDULE_NAME)["status"] == "RUNNING"
    assert dagster.stop_schedule(SCHEDULE_NAME) == "STOPPED"

    # 1. "Materialize all" for one partition, on the asset graph: a run of the implicit asset job
    run_id = dagster.materialize(list(ASSET_NAMES), single_key, run_config())
    run = dagster.wait_run(run_id, timeout_s=300)
    assert run["status"] == "SUCCESS", dagster.run_errors(run_id)
    assert_trains_like_the_hourly_job(dagster, run_id)
    clock(f"Materialize {single_key}: {run['status']} in {run['endTime'] - run['startTime']:.1f}s")
    [first] = entries_for_partition(db, partition_window(single_key)[1])
    assert (first["run_id"], first["partition_key"]) == (run_id, single_key)
    assert store.exists(first["file_name"])

    # 2. an asset backfill of three consecutive hours, one run per hour, training one at a time
    backfill_id = dagster.launch_backfill(list(ASSET_NAMES), backfill_keys, run_config())
    backfill = wait_for("the backfill to complete",
                        lambda: (b := dagster.backfill(backfill_id))["status"] in
                        ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED") and b,
                        timeout_s=600, interval_s=2, on_timeout=dagster.logs)
    runs = backfill["runs"]
    clock(f"backfill {backfill_id} {backfill_keys}: {backfill['status']}, runs "
          + ", ".join(f"{r['status']} {r['endTime'] - r['startTime']:.1f}s" for r in runs))
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), \
        "\n".join(dagster.run_errors(r["runId"]) for r in runs)
    assert sorted(r["status"] for r in runs) == ["SUCCESS"] * 3
    for backfill_run in runs:
        tags = assert_trains_like_the_hourly_job(dagster, backfill_run["runId"])
        assert tags.get("dagster/backfill") == backfill_id
    # backfill runs carry their partition as a one-partition range
    assert sorted(run_partition({t["key"]: t["value"] for t in r["tags"]}) for r in runs) == backfill_keys
    spans = sorted((r["startTime"], r["endTime"]) for r in runs)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False)), \
        f"training runs overlapped: {spans}"
    # in order, hour by hour: the daemon submits the runs in partition order and the queue starts
    # them first in, first out, one at a time (training pool), so each hour finds the snapshot of
    # the hour before it
    by_start = sorted(runs, key=lambda r: r["startTime"])
    assert [run_partition({t["key"]: t["value"] for t in r["tags"]}) for r in by_start] == backfill_keys
    # each hour saw exactly the stars before its end: the first read them all, the next two only
    # their own hour, each extending the snapshot of the hour before
    # each backfill run's own stored value (per-run paths: <asset>/<hour>/<run id>.npz)
    folder = home / "storage" / "assets" / "raw_repositories"
    snapshots = [decode((folder / k / f"{r['runId']}.npz").read_bytes())
                 for k, r in zip(backfill_keys, by_start, strict=True)]
    assert [s.read_mode for s in snapshots] == ["full", "incremental", "incremental"]
    for key, snapshot in zip(backfill_keys, snapshots, strict=True):
        end = partition_window(key)[1]
        assert len(snapshot.star_user_ids) == db.stars.count_documents({"starred_at": {"$lt": end}})
        assert snapshot.starred_at.max() < np.datetime64(end.replace(tzinfo=None), "us")
    hours = [partition_window(k) for k in backfill_keys[1:]]
    assert [s.stars_read for s in snapshots[1:]] == [
        db.stars.count_documents({"starred_at": {"$gte": start, "$lt": end}}) for start, end in hours]

    backfill_run_ids = {r["runId"] for r in runs}
    entries = [e for e in db[MODELS].find({"run_id": {"$in": sorted(backfill_run_ids)}})]
    entries.sort(key=lambda e: e["data_end"])
    assert [e["partition_key"] for e in entries] == backfill_keys
    # nested data windows: each model saw every star before its hour's end, so each sees more
    assert [e["data_end"] for e in entries] == [partition_window(k)[1] for k in backfill_keys]
    nonzeros = [e["data_sizes"]["nonzeros"] for e in entries]
    assert nonzeros[0] < nonzeros[1] < nonzeros[2], nonzeros
    # each later hour continued the model of the hour before it (never one that saw later stars)
    assert [e["training_mode"] for e in entries] == ["warm", "warm", "warm"]   # hour 1: the run above
    started_from = [e["warm_start"]["from"]["run_id"] for e in entries]
    assert started_from == [run_id] + [e["run_id"] for e in entries[:2]]
    # the re-run hour kept its first model and gained a second, under another name
    rerun = entries_for_partition(db, partition_window(single_key)[1])
    assert [e["run_id"] for e in rerun][0] == run_id and len(rerun) == 2
    assert rerun[0]["file_name"] != rerun[1]["file_name"]
    assert all(store.exists(e["file_name"]) for e in rerun)

    # 3. a model that fails a blocking check is not registered; the failure is recorded
    failing = dagster.launch_run("hourly_training_job", failing_key, run_config(min_margin=1.0))
    assert dagster.wait_run(failing, timeout_s=300)["status"] == "FAILURE"
    clock(f"run {failing_key} with an unreachable margin: FAILURE")
    assert entries_for_partition(db, partition_window(failing_key)[1]) == []
    record = wait_for("the run-failure sensor to record the run",
                      lambda: db[RUN_FAILURES].find_one({"run_id": failing}), timeout_s=120,
                      on_timeout=dagster.logs)
    assert record["partition_key"] == failing_key
    assert any(s["step_key"] == BEATS_POPULARITY for s in record["step_failures"]), record
    [check] = record["failed_checks"]
    assert check["check"] == "recvae_model_beats_popularity"
    assert "does not beat popularity" in check["description"]
    clock(f"run_failures: {check['check']}: {check['description']}")

    # 4. the freshness policy sees the registrations
    assert wait_for("model_registry_entry to be fresh", lambda: dagster.freshness("model_registry_entry")
                    == "HEALTHY", timeout_s=120, interval_s=2)
    clock("freshness of model_registry_entry: HEALTHY")

    # 5. turn on the new-stars sensor: the latest closed hour has >= 50 stars the newest model
    # has not seen, so it requests that hour once, with its run key
    assert dagster.start_sensor(NEW_STARS_SENSOR_NAME) == "RUNNING"
    tick = wait_for("a sensor tick that requested a run",
                    lambda: next((t for t in dagster.instigator("sensor", NEW_STARS_SENSOR_NAME)["ticks"]
                                  if t["runIds"]), None),
                    timeout_s=120, interval_s=2, on_timeout=dagster.logs)
    [sensor_run_id] = tick["runIds"]
    clock(f"new_stars_sensor requested run {sensor_run_id}")
    sensor_run = dagster.run(sensor_run_id)
    tags = {t["key"]: t["value"] for t in sensor_run["tags"]}
    # (the hour may have turned since the test began: then the sensor asks for the new latest one)
    assert tags["dagster/partition"] in {latest, latest_closed_partition(datetime.now(UTC))[0]}
    assert tags["dagster/run_key"] == f"new-stars-{tags['dagster/partition']}"
    assert tags["batchrec/trigger"] == "new_stars"
    # later ticks stay quiet: that hour is requested already
    wait_for("a later skipped tick", lambda: next(
        (t for t in dagster.instigator("sensor", NEW_STARS_SENSOR_NAME)["ticks"]
         if t["status"] == "SKIPPED" and t["timestamp"] > tick["timestamp"]), None),
        timeout_s=60, interval_s=2)
    ticks = dagster.instigator("sensor", NEW_STARS_SENSOR_NAME)["ticks"]
    assert sum(1 for t in ticks if t["runIds"]) == 1, ticks
    clock("next tick skipped: " + next(t["skipReason"] for t in ticks if t["status"] == "SKIPPED"))
