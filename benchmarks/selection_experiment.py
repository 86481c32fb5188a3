"""The 8-hour experiment of issue 10, through the CLI as a new user runs it, then the table.

    python benchmarks/selection_experiment.py --day 2026-11-30 --hours 1-8 [--port 27231] [--home DIR]

= `batchrec load-demo --users 3000 --repos 1200 --days 2`, then for each hour HH
`batchrec materialize --partition DAY-HH:00 --epochs 8` (which evaluates window HH, then trains
HH), then `batchrec evaluate` for the hour after the last one (so the last model gets a comparable
score too). BATCHREC_HOME (a fresh temporary folder unless --home) and BATCHREC_MONGO_PORT are
this run's own; the embedded MongoDB is stopped at the end. Prints a markdown table: per hour the
model's own validation and test scores, its comparable score on the window right after its data,
the champion after that hour's run, and the model the old rule (highest own score) would serve.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedded import stop_embedded  # noqa: E402 - the benchmarks folder is not a package

ROOT = Path(__file__).resolve().parents[1]
BATCHREC = str(Path(sys.executable).with_name("batchrec"))


def run(env: dict[str, str], *args: str) -> str:
    started = time.perf_counter()
    done = subprocess.run([BATCHREC, *args], env=env, capture_output=True, text=True, cwd=ROOT)
    print(f"$ batchrec {' '.join(args)}  ({time.perf_counter() - started:.0f}s, exit {done.returncode})",
          file=sys.stderr, flush=True)
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--day", default="2026-11-30")
    parser.add_argument("--hours", default="1-8", help="first-last KST hour")
    parser.add_argument("--port", type=int, default=27231)
    parser.add_argument("--home", help="BATCHREC_HOME (default: a new temporary folder)")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    first, last = (int(h) for h in args.hours.split("-"))
    home = args.home or tempfile.mkdtemp(prefix="batchrec-selection-")
    env = {**os.environ, "BATCHREC_HOME": home, "BATCHREC_MONGO_PORT": str(args.port),
           "BATCHREC_DEPLOYMENT": "local"}
    env.pop("MONGODB_URI", None)
    env.pop("DAGSTER_HOME", None)
    try:
        load = os.getloadavg()
        run(env, "load-demo", "--users", "3000", "--repos", "1200", "--days", "2")
        champions_after: dict[int, str] = {}
        for hour in range(first, last + 1):
            run(env, "materialize", "--partition", f"{args.day}-{hour:02d}:00", "--epochs", str(args.epochs))
            champions_after[hour] = champion_id(env)
        run(env, "evaluate", "--partition", f"{args.day}-{last + 1:02d}:00")
        champions_after[last + 1] = champion_id(env)
        print(table(env, args.day, first, last, champions_after))
        print(f"\nload average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after "
              + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; BATCHREC_HOME {home}")
        print("\n" + run(env, "registry", "--limit", "12"))
    finally:
        stop_embedded(Path(home) / "mongo")  # what `batchrec stop` does, plus waiting until it is gone
    return 0


def _db(env: dict[str, str]):
    from batchrec_dagster.deployments import open_database
    from batchrec_dagster.settings import load_settings

    return open_database(load_settings(env))


def champion_id(env: dict[str, str]) -> str:
    from batchrec_dagster.registry.champions import current_champion

    record = current_champion(_db(env))
    return record["model_id"] if record else "none"


def table(env: dict[str, str], day: str, first: int, last: int, champions_after: dict[int, str]) -> str:
    from batchrec_dagster.defs.partitions import partition_window
    from batchrec_dagster.registry.evaluations import EVALUATIONS
    from batchrec_dagster.registry.models import MODELS

    db = _db(env)
    models = {m["partition_key"]: m for m in db[MODELS].find({})}
    hour_of = {str(m["_id"]): key[-5:-3] for key, m in models.items()}
    lines = ["| hour (KST) | own validation NDCG@100 | own test NDCG@100 | comparable NDCG@100 on the "
             "next hour | popularity on that hour | champion after the hour's run | old rule would serve |",
             "|---|---:|---:|---:|---:|---|---|"]
    for hour in range(first, last + 1):
        model = models[f"{day}-{hour:02d}:00"]
        window_key = f"{day}-{hour + 1:02d}:00"
        # by the window's end date: nx-27017 cannot match partition-key strings (mongo_compat.py)
        evaluation = db[EVALUATIONS].find_one({"model_id": str(model["_id"]),
                                               "window_end": partition_window(window_key)[1]})
        scored = evaluation is not None and evaluation.get("score") is not None
        comparable = f"{evaluation['score']:.4f}" if scored else "-"
        registered = [m for m in models.values() if m["data_end"] <= model["data_end"]]
        # the seed's rule: the highest own score (then measured on the validation users), newest on ties
        old_rule = max(registered, key=lambda m: (m["validation_score"], m["created_at"]))
        champion = hour_of.get(champions_after[hour], "?")
        lines.append(f"| {hour:02d} | {model['validation_score']:.4f} | {model['score']:.4f} | "
                     f"{comparable} | {popularity(env, window_key)} | {champion} | "
                     f"{old_rule['partition_key'][-5:-3]} |")
    lines.append(f"\nAfter `evaluate` of hour {last + 1:02d}: champion = hour "
                 f"{hour_of.get(champions_after[last + 1], '?')}.")
    lines.append("\nComparable scores of every model on every window (rows: window; columns: the "
                 "model's hour):\n")
    lines += matrix(db, day, first, last, hour_of)
    return "\n".join(lines)


def popularity(env: dict[str, str], window_key: str) -> str:
    """The window's popularity score, from the evaluation's metadata in the run's Dagster instance."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(Path(env["BATCHREC_HOME"]) / "dagster_home")
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("model_evaluation"), asset_partitions=[window_key]),
            limit=1).records
    value = records[0].asset_materialization.metadata.get("popularity_score") if records else None
    return f"{value.value:.4f}" if value is not None else "-"


def matrix(db, day: str, first: int, last: int, hour_of: dict[str, str]) -> list[str]:
    from batchrec_dagster.defs.partitions import partition_window
    from batchrec_dagster.registry.evaluations import EVALUATIONS

    hours = [f"{h:02d}" for h in range(first, last + 1)]
    lines = ["| window | " + " | ".join(hours) + " | best |", "|---|" + "---:|" * (len(hours) + 1)]
    for window in range(first + 1, last + 2):
        key = f"{day}-{window:02d}:00"
        found = db[EVALUATIONS].find({"window_end": partition_window(key)[1]})
        scores = {hour_of[e["model_id"]]: e["score"] for e in found
                  if e.get("score") is not None and e["model_id"] in hour_of}
        best = max(scores, key=lambda h: (scores[h], h)) if scores else "-"
        cells = " | ".join(f"{scores[h]:.4f}" if h in scores else "" for h in hours)
        lines.append(f"| {window:02d} | {cells} | {best} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
