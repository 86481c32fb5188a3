"""A job that does nothing, for tests that need real runs of some job but not of the pipeline:
test_run_reaper.py creates its runs in process, test_workarounds.py launches it with
`dagster job launch -f <this file> -j noop_job` (so it imports nothing but Dagster)."""

from __future__ import annotations

import dagster as dg


@dg.op
def noop() -> None:
    return None


@dg.job
def noop_job() -> None:
    noop()
