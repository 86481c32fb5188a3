"""What an incremental hour costs beyond its own stars, at a given history: the in-memory steps of
raw_repositories (merge the hour into the snapshot, store the snapshot) and of user_item_matrix
(de-duplicate and build the CSR), each the way it is done now against the way it was done before.

    python benchmarks/snapshot_costs.py --scales 1 4 --repeats 3 --output benchmarks/results/snapshot_costs

Synthetic stars shaped like the demo's (40,000 users x scale, 20,000 repositories, ~29 stars per
user, 7,000 new stars in the hour): only sizes matter here, not who starred what. Every figure is
the minimum over `--repeats` runs; the pipeline's own step times come from bench_hourly.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from machine import cpu_model

from batchrec_dagster.sources.github_ids import string_array
from batchrec_dagster.sources.snapshot import StarColumns, merge_sorted, sort_stars
from batchrec_dagster.storage import codec
from batchrec_dagster.storage.values import RawRepositories
from recvae import build_interactions

USERS, REPOS, STARS_PER_USER, HOUR_STARS = 40_000, 20_000, 29, 7_000
START = np.datetime64("2026-06-01T00:00:00", "us")


def _stars(rng: np.random.Generator, n: int, users: int, repos: np.ndarray, hours: float,
           offset_hours: float = 0.0) -> StarColumns:
    micros = rng.integers(0, int(hours * 3600e6), n).astype("timedelta64[us]")
    at = START + np.timedelta64(int(offset_hours * 3600e6), "us") + micros
    return StarColumns(rng.integers(1, users + 1, n) * 3, rng.choice(repos, n), at)


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _encode_at(value: object, level: int) -> bytes:
    saved, codec.COMPRESS_LEVEL = codec.COMPRESS_LEVEL, level
    try:
        return codec.encode(value)
    finally:
        codec.COMPRESS_LEVEL = saved


def measure(scale: int, repeats: int) -> dict:
    rng = np.random.default_rng(scale)
    repos = np.arange(1, REPOS + 1, dtype=np.int64) * 7
    days = 7 * scale  # the demo's rate of new stars per hour at every scale
    snapshot, _, _ = sort_stars(repos, _stars(rng, USERS * scale * STARS_PER_USER, USERS * scale, repos,
                                              hours=24 * days, offset_hours=-24 * days))
    hour = _stars(rng, HOUR_STARS, USERS * scale, repos, hours=1)
    end = datetime(2026, 6, 1, tzinfo=UTC)
    raw = RawRepositories(
        repo_ids=repos, full_names=string_array([f"owner/repo{i}" for i in range(REPOS)]),
        repo_stars=np.full(REPOS, 100), languages=string_array([""] * REPOS),
        star_user_ids=snapshot.user_ids, star_repo_ids=snapshot.repo_ids, starred_at=snapshot.starred_at,
        window_start=end - timedelta(hours=1), window_end=end, layout="stars")
    row = {"scale": scale, "stars": len(snapshot)}
    row["merge_sort_all_s"] = _best(lambda: sort_stars(repos, StarColumns.concat(snapshot, hour)), repeats)
    row["merge_sorted_s"] = _best(lambda: merge_sorted(repos, snapshot, hour), repeats)
    for level in (6, 1):
        data = _encode_at(raw, level)
        row[f"encode_level{level}_s"] = _best(lambda lv=level: _encode_at(raw, lv), repeats)
        row[f"encode_level{level}_mb"] = len(data) / 1e6
        row[f"decode_level{level}_s"] = _best(lambda d=data: codec.decode(d), repeats)
    keys = snapshot.user_ids * REPOS + np.searchsorted(repos, snapshot.repo_ids)
    row["unique_hashed_s"] = _best(lambda: np.unique(keys), repeats)
    row["build_interactions_s"] = _best(lambda: build_interactions(snapshot.user_ids, snapshot.repo_ids),
                                        repeats)
    return row


def markdown(rows: list[dict], command: str, load: tuple) -> str:
    lines = ["# Snapshot costs of an incremental hour, by history", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, `{cpu_model()}`; load average before "
             f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after "
             + " ".join(f"{v:.2f}" for v in os.getloadavg()), "",
             "Seconds are the minimum of the repeats. *sort all*: the hour merged by sorting snapshot + "
             "hour again (before); *merge_sorted*: the hour inserted into the sorted snapshot (now). "
             "*level 6*: np.savez_compressed (before); *level 1*: codec.COMPRESS_LEVEL (now). "
             "*np.unique*: NumPy's hashed unique of the (user, item) keys (before); "
             "*build_interactions*: the whole CSR build with the sort-based unique (now).", "",
             "| stars | merge: sort all s | merge_sorted s | encode level 6 s | MB | encode level 1 s "
             "| MB | decode level 1 s | np.unique (hashed) of the keys s | build_interactions s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    cells = ("{stars:,}", "{merge_sort_all_s:.2f}", "{merge_sorted_s:.3f}", "{encode_level6_s:.2f}",
             "{encode_level6_mb:.1f}", "{encode_level1_s:.2f}", "{encode_level1_mb:.1f}",
             "{decode_level1_s:.2f}", "{unique_hashed_s:.2f}", "{build_interactions_s:.2f}")
    lines += ["| " + " | ".join(c.format(**r) for c in cells) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None, help="writes OUTPUT.md and OUTPUT.json")
    args = parser.parse_args()
    load = os.getloadavg()
    rows = [measure(scale, args.repeats) for scale in args.scales]
    command = "python benchmarks/snapshot_costs.py " + " ".join(
        [f"--scales {' '.join(map(str, args.scales))}", f"--repeats {args.repeats}"]
        + ([f"--output {args.output}"] if args.output else []))
    text = markdown(rows, command, load)
    print(text)
    if args.output:
        args.output.with_suffix(".md").write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
