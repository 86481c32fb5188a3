"""What every asset of the lineage shares: partitions, backfill policy, group, code version.

The partitions come from the settings (BATCHREC_PARTITIONS_START), so an asset or check module
defines an `Hourly`: the compute function and its decorator's arguments, made into the Dagster
object by `build(partitions)` when build_definitions knows the settings.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from batchrec_dagster.defs.assets.metadata import rounded_result

GROUP = "recommender"
# one model per hour: a backfill launches one run per partition, never a multi-hour run
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=1)


@dataclass(frozen=True)
class Hourly:
    """An asset or asset check of the hourly lineage before its partitions are known:
    `build(partitions)` applies `decorator` (dg.asset, dg.asset_check) to `compute`."""

    decorator: Callable[..., Callable[[Callable[..., Any]], Any]]
    compute: Callable[..., Any]
    arguments: dict[str, Any] = field(default_factory=dict)

    def build(self, partitions: dg.PartitionsDefinition, **more: Any) -> Any:
        return self.decorator(partitions_def=partitions, **self.arguments, **more)(self.compute)


def partition_seed(partition_key: str) -> int:
    """A stable 32-bit seed per partition, so re-running a partition reproduces its split."""
    return int.from_bytes(hashlib.sha256(partition_key.encode()).digest()[:4], "big")


@functools.cache
def code_version() -> str:
    """batchrec's version plus the git commit when the code runs from a checkout."""
    import subprocess
    from pathlib import Path

    from batchrec_dagster import __version__

    root = Path(__file__).resolve().parents[3]  # the checkout: batchrec_dagster/defs/assets/common.py
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}" if commit else __version__


def with_run_defaults(compute: Callable[..., Any]) -> Callable[..., Any]:
    """`compute` called with its `config` resolved: the fields the run config left None set from
    the settings, when it also takes the `run_defaults` resource (RunDefaults.fill). Dagster passes
    config and resources by name, and reads the parameters through __wrapped__."""

    @functools.wraps(compute)
    def filled(*args: Any, **kw: Any) -> Any:
        if "config" in kw and "run_defaults" in kw:
            kw["config"] = kw["run_defaults"].fill(kw["config"])
        return compute(*args, **kw)

    return filled


def hourly_asset(**kwargs: Any) -> Callable[[Callable[..., Any]], Hourly]:
    """`dg.asset` with what the assets of the lineage share: the hourly partitions (at `build`), one
    run per partition in backfills, the `recommender` group, Dagster's code_version (batchrec's
    version and commit), run config resolved against the settings (with_run_defaults), and the
    floats of their metadata rounded for Dagit (metadata.rounded_result)."""
    arguments = {"backfill_policy": BACKFILL_POLICY, "group_name": GROUP, "code_version": code_version(),
                 **kwargs}

    def decorate(compute: Callable[..., Any]) -> Hourly:
        resolved = with_run_defaults(compute)
        if inspect.isgeneratorfunction(compute):
            # a generator stays one, so that Dagster stores each Output as it is yielded
            @functools.wraps(compute)
            def rounding_events(*args: Any, **kw: Any) -> Any:
                for event in resolved(*args, **kw):
                    yield rounded_result(event)

            return Hourly(dg.asset, rounding_events, arguments)

        @functools.wraps(compute)  # Dagster reads the parameters and annotations through __wrapped__
        def rounding(*args: Any, **kw: Any) -> Any:
            return rounded_result(resolved(*args, **kw))

        return Hourly(dg.asset, rounding, arguments)

    return decorate
