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
the catalog. No extra check or sensor is needed, so this module adds nothing to ASSET_CHECKS or
SENSORS; `definitions.py` applies the policy with `apply_model_freshness`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import dagster as dg

from batchrec_dagster.settings import env_number

FRESHNESS_ASSET = dg.AssetKey("model_registry_entry")
DEFAULT_FRESHNESS_HOURS = 3.0


def freshness_window(environ: dict[str, str] | None = None) -> timedelta:
    """The fail window, from BATCHREC_FRESHNESS_HOURS (hours, may be fractional; at least 1 minute)."""
    # Dagster's smallest freshness window is one minute
    hours = env_number("BATCHREC_FRESHNESS_HOURS", DEFAULT_FRESHNESS_HOURS, kind=float,
                       minimum=1 / 60, environ=environ)
    return timedelta(hours=hours)


def model_freshness_policy(fail_window: timedelta | None = None) -> dg.FreshnessPolicy:
    """Fail after `fail_window` without a registration; warn one hour before (when that leaves room)."""
    fail = fail_window or freshness_window()
    warn = fail - timedelta(hours=1)
    return dg.FreshnessPolicy.time_window(
        fail_window=fail, warn_window=warn if warn >= timedelta(minutes=1) else None)


def apply_model_freshness(assets: Sequence, policy: dg.FreshnessPolicy | None = None) -> list:
    """The assets with the freshness policy on `model_registry_entry` (others unchanged)."""
    policy = policy or model_freshness_policy()

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        return dg.apply_freshness_policy(spec, policy) if spec.key == FRESHNESS_ASSET else spec

    return [asset.map_asset_specs(attach)
            if isinstance(asset, dg.AssetsDefinition) and FRESHNESS_ASSET in asset.keys else asset
            for asset in assets]
