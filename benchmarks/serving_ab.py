"""A/B of the server's code on a noisy machine: rows of two (or more) source trees, interleaved.

The 2-core development machine is a shared VM whose speed drifts from minute to minute: the same
server's CPU time per request moved between 0.26 and 0.48 ms within an hour on 2026-11-30, and its
p99 with it. A change measured in one run and the old code in another compares two moments, not two
codes. This runs the same `batchrec serve` command from each tree in turn (a tree is a checkout of
the repository, e.g. a `git worktree` of the old commit), round after round, against one embedded
MongoDB and one registered model, with wrk and 16 connections as in bench_serving.py, and writes
every row with its load average and the server's CPU per request (the machine's speed at the
moment).

    git worktree add /tmp/before <commit>
    python benchmarks/serving_ab.py /tmp/before . --rounds 4 --name serving_ab

A tree may carry settings after a colon: `.:--torch-threads=2,OMP_WAIT_POLICY=PASSIVE` adds the
`--`-option to the server's command line and the other to its environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_serving import Server, make_artifact, make_inputs, register, start_registry  # noqa: E402
from serving_load import drive, drive_wrk, load_average, wrk_available  # noqa: E402


def parse_variant(spec: str) -> tuple[Path, list[str], dict[str, str]]:
    """`tree[:--opt=value,ENV=value,...]` -> the tree, extra server options, extra environment."""
    tree, _, settings = spec.partition(":")
    options: list[str] = []
    env: dict[str, str] = {}
    for item in filter(None, settings.split(",")):
        name, _, value = item.partition("=")
        if name.startswith("--"):
            options += [name, value]
        else:
            env[name] = value
    return Path(tree).resolve(), options, env


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="serving_ab_"))
    mongo, db, store, base = start_registry(work)
    try:
        data, item_ids = make_artifact(args.items, seed=args.items)
        inputs = make_inputs(item_ids, 400, seed=1)
        entry = register(db, store, data, 1.0)
        rows = []
        for round_ in range(args.rounds):
            for spec in args.trees:
                tree, options, env = parse_variant(spec)
                server = Server({**base, **env, "PYTHONPATH": str(tree)}, threads=1, inference="batched",
                                poll_seconds=1.0, log=work / "server.log", cwd=tree, options=options)
                try:
                    server.wait_for_model(str(entry["_id"]))
                    asyncio.run(drive(server.port, inputs[:50], 4, 1.0))  # warm connections
                    load = load_average()
                    cpu = server.cpu()
                    summary, _ = drive_wrk(server.port, inputs, args.clients, args.seconds, work)
                    cpu_ms = (server.cpu() - cpu) * 1e3 / max(summary["requests"], 1)
                finally:
                    server.stop()
                row = {"round": round_, "variant": spec, "load_avg": load,
                       "server_cpu_ms_per_request": round(cpu_ms, 3),
                       **{k: summary[k] for k in ("requests", "errors", "rps", "p50_ms", "p90_ms",
                                                  "p99_ms", "max_ms")}}
                rows.append(row)
                print(f"round {round_} {spec}: rps={row['rps']:.0f} p50={row['p50_ms']:.2f} "
                      f"p99={row['p99_ms']:.2f} cpu/req={cpu_ms:.3f} load={load}", flush=True)
    finally:
        mongo.terminate()
        mongo.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
            "started_at": args.started_at, "cpus": os.cpu_count(), "items": args.items,
            "clients": args.clients, "seconds": args.seconds, "rows": rows}


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Serving A/B (interleaved rows)", "",
             f"Command: `{results['command']}`  ",
             f"Started {results['started_at']} on {results['cpus']} CPUs; {results['items']:,} items, "
             f"wrk with {results['clients']} connections, {results['seconds']:g} s per row, 1 worker.", "",
             "| round | variant | req/s | p50 ms | p99 ms | max ms | errors | server CPU ms/req | load avg |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['round']} | `{r['variant']}` | {r['rps']:,.0f} | {r['p50_ms']:.2f} "
                     f"| {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['errors']} "
                     f"| {r['server_cpu_ms_per_request']:.3f} | {r['load_avg']} |")
    lines += ["", "| variant | rows | median p99 ms | median server CPU ms/req |", "|---|---:|---:|---:|"]
    for variant in dict.fromkeys(r["variant"] for r in results["rows"]):
        mine = [r for r in results["rows"] if r["variant"] == variant]
        lines.append(f"| `{variant}` | {len(mine)} | {statistics.median(r['p99_ms'] for r in mine):.2f} "
                     f"| {statistics.median(r['server_cpu_ms_per_request'] for r in mine):.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", help="source trees, each `path[:--option=value,ENV=value]`")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--name", default="", help="write benchmarks/results/NAME.md and .json")
    args = parser.parse_args()
    if not wrk_available():
        parser.error("wrk is not installed (apt-get install wrk)")
    args.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    results = run(args)
    if args.name:
        out = ROOT / "benchmarks" / "results"
        (out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / f"{args.name}.md").write_text(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
