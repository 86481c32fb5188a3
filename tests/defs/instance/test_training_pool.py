"""Issue 13, point 2: the training pool holds for runs submitted at once to a fresh instance.

dagster-webserver + dagster-daemon on a fresh DAGSTER_HOME with the shipped dagster.yaml (pool
limit 1, run granularity). Two launchRun calls and a two-hour asset backfill
(launchPartitionBackfill, all five assets) are submitted before the run queue has seen the
`training` pool. Dagster 1.13.27's queue alone launches all the runs of that first pass at once
(it writes the pool's default limit during the pass and ignores it there);
defs/instance/run_queue.py writes it at submission (workarounds.ensure_pool_limits, whose own tests
are in test_workarounds.py). The event log of every run must show recvae_model steps that never
overlap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchrec_dagster.defs.automation.star_arrivals import latest_closed_partition
from batchrec_dagster.defs.jobs import ASSET_NAMES
from tests.defs.test_end_to_end import hour_before, run_config
from tests.harness.dagster_services import wait_for
from tests.harness.dagster_stack import dagster_stack

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")


@pytest.mark.slow
def test_runs_submitted_at_once_never_train_together(tmp_path: Path, mongo_server_uri: str) -> None:
    latest = latest_closed_partition(datetime.now(UTC))[0]
    keys = [hour_before(latest, n) for n in (4, 3, 2, 1)]
    with dagster_stack(tmp_path, mongo_server_uri, daemon=False) as stack:
        dagster = stack.services
        # submitted before the daemon runs (as when `batchrec dev` restarts with work waiting), so
        # the run queue's first pass finds several training runs at once
        launched = [dagster.launch_run("hourly_training_job", key, run_config()) for key in keys[:2]]
        backfill_id = dagster.launch_backfill(list(ASSET_NAMES), keys[2:], run_config())
        assert [dagster.run(run_id)["status"] for run_id in launched] == ["QUEUED", "QUEUED"]
        dagster.start_daemon()
        backfill = wait_for("the backfill's runs to be created",
                            lambda: len((b := dagster.backfill(backfill_id))["runs"]) == 2 and b,
                            timeout_s=180, interval_s=1, on_timeout=dagster.logs)
        run_ids = launched + [r["runId"] for r in backfill["runs"]]
        runs = [dagster.wait_run(run_id, timeout_s=600) for run_id in run_ids]
        assert [r["status"] for r in runs] == ["SUCCESS"] * 4, \
            "\n".join(dagster.run_errors(r["runId"]) for r in runs)
        spans = sorted(dagster.step_span(run_id, "recvae_model") for run_id in run_ids)
    print("recvae_model steps (s after the first):",
          [(round(s - spans[0][0], 1), round(e - spans[0][0], 1)) for s, e in spans])
    assert all(end is not None for _, end in spans)
    overlaps = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert not overlaps, f"recvae_model steps overlapped: {overlaps}"
