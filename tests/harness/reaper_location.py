"""The project's code location plus stale_run_reaper, until defs/definitions.py lists the reaper itself."""

import dagster as dg

import batchrec_dagster.defs.definitions as project
from batchrec_dagster.defs.instance.run_reaper import REAPER_NAME, stale_run_reaper

# (one Definitions object at module scope: Dagster refuses a module that holds two)
defs = project.defs if any(s.name == REAPER_NAME for s in project.defs.sensors or []) \
    else dg.Definitions.merge(project.defs, dg.Definitions(sensors=[stale_run_reaper]))
