"""Stand-ins for the five assets (real names, real partitions) for tests of the automation alone."""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.defs.jobs import ASSET_NAMES
from batchrec_dagster.defs.partitions import hourly_partitions


def stub_assets() -> list[dg.AssetsDefinition]:
    assets, upstream = [], []
    for name in ASSET_NAMES:
        @dg.asset(name=name, partitions_def=hourly_partitions, deps=upstream)
        def _stub() -> None:
            return None

        assets.append(_stub)
        upstream = [name]
    return assets
