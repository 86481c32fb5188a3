"""Freshness: flag when no model has been registered for longer than a window.

Dagster 1.13's idiom is a `FreshnessPolicy` attached to the asset (the freshness *checks*
`build_last_update_freshness_checks` / `build_sensor_for_freshness_checks` are marked superseded by
it). The policy goes on `model_registry_entry`, whose every materialization is one registration:

- PASS while the last registration is younger than `BATCHREC_FRESHNESS_HOURS` minus one hour
  (default window 3 hours, so PASS below 2 hours),
- WARN in the last hour of the window,
- FAIL once nothing has been registered for the whole window, until the next registration.

The dagster-daemon's freshness daemon evaluates it every 30 s (enabled by default; `freshness:
enabled: false` in dagster.yaml turns it off). Dagit shows the state on the asset's page and in
the catalog. No extra check or sensor is needed: `model_registry_entry` declares the policy.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from batchrec_dagster.settings import Settings


def freshness_window(settings: Settings) -> timedelta:
    """The fail window, BATCHREC_FRESHNESS_HOURS (settings.py keeps it at least Dagster's minimum,
    one minute)."""
    return timedelta(hours=settings.freshness_hours)


def model_freshness_policy(fail: timedelta) -> dg.FreshnessPolicy:
    """Fail after `fail` without a registration; warn one hour before (when that leaves room)."""
    warn = fail - timedelta(hours=1)
    return dg.FreshnessPolicy.time_window(
        fail_window=fail, warn_window=warn if warn >= timedelta(minutes=1) else None)
