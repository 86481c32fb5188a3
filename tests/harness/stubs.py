"""Stand-ins for the five assets (real names, real partitions) for tests of the automation alone."""

from __future__ import annotations

import dagster as dg

from batchrec_dagster.defs.jobs import ASSET_NAMES
from batchrec_dagster.defs.partitions import hourly_partitions
from batchrec_dagster.settings import load_settings

# the partitions of the default settings (BATCHREC_PARTITIONS_START 2026-01-01-00:00)
PARTITIONS = hourly_partitions(load_settings({}))


def stub_assets(partitions: dg.PartitionsDefinition = PARTITIONS) -> list[dg.AssetsDefinition]:
    assets, upstream = [], []
    for name in ASSET_NAMES:
        @dg.asset(name=name, partitions_def=partitions, deps=upstream)
        def _stub() -> None:
            return None

        assets.append(_stub)
        upstream = [name]
    return assets
