"""Hourly runs end to end: one full hour H, warm hours H+1..H+3, and a full retrain of H+3.

    python benchmarks/bench_hourly.py --full-epochs 16                  # demo, 3 github seeds, 4x history
    python benchmarks/bench_hourly.py --users 3000 --repos 1500 --full-epochs 10 --skip-github  # quick

Each run is `hourly_training_job` (all five assets and their checks) in its own process, as
`batchrec materialize` runs it, against an embedded MongoDB (nx-27017) and a local folder started
for the benchmark; its peak RSS is that process's ru_maxrss. Run config: H and the retrain of H+3
with `read: full` and `mode: full`, the warm hours with the defaults (incremental read, warm start).
Data and the test users that no model sees: hourly_data.py. Results: benchmarks/results/hourly.md
and .json, with the command and the load average before and after every run (the CPU is shared).
New-repository recall: Recall@100 of the test users' stars on repositories a model knows and H's
model did not (hourly_data.new_repository_recall).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from hourly_report import ASSETS, COMPARATOR, COMPARATOR_SEED_OFFSET
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "github-stars-tiny"
FULL = {"raw_repositories": {"read": "full"}, "recvae_model": {"mode": "full"}}


def child(partition_key: str, ops: dict[str, Any]) -> None:
    """One hourly run in this process; prints RESULT {json}."""
    import dagster as dg

    from batchrec_dagster.cli.materialize import prepare_dagster_home
    from batchrec_dagster.settings import get_settings

    settings = get_settings()  # this child process's entry point
    prepare_dagster_home(settings)
    from batchrec_dagster.cli.materialize import asset_metadata, materialize_partition

    run_config = {"ops": {op: {"config": config} for op, config in ops.items()},
                  "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = materialize_partition(partition_key, settings=settings, run_config=run_config,
                                       instance=instance, raise_on_error=False)
        steps = {s.step_key: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)
                 if s.end_time and s.start_time}
    metadata = {asset: {k: v for k, v in asset_metadata(result, asset).items()
                        if isinstance(v, int | float | str) and len(str(v)) < 300} for asset in ASSETS}
    print("RESULT " + json.dumps({
        "success": result.success, "run_id": result.run_id, "job_seconds": time.perf_counter() - started,
        "steps": steps, "metadata": metadata,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def run_hour(env: dict[str, str], key: str, ops: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", key, json.dumps(ops)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines or not json.loads(lines[-1][7:])["success"]:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-5000:])
        raise SystemExit(f"hourly run failed: {shlex.join(cmd)}")
    result = json.loads(lines[-1][7:])
    result.update(wall_seconds=wall, load_1m=[round(load_before, 2), round(os.getloadavg()[0], 2)])
    return result


def run_case(name: str, hours_data: Any, keys: list[str], args: argparse.Namespace, seed: int = 0,
             plan: str = "hours") -> dict[str, Any]:
    """plan "hours": H full, H+1..H+3 warm, a full retrain of H+3; "cost": H full (its epochs from
    --cost-full-epochs: only a starting model) and --cost-hours warm hours, for the cost against
    history."""
    from hourly_data import new_repository_recall, score_test_users

    from batchrec_dagster.defs.partitions import partition_window
    from batchrec_dagster.registry.models import MODELS
    from batchrec_dagster.sources.demo_data import record_dataset, write_source
    from batchrec_dagster.sources.embedded_mongo import mongo_uri, start_server, wait_until_serving
    from batchrec_dagster.sources.mongo import connect
    from batchrec_dagster.storage.blobs import LocalBlobStore
    from recvae import load_artifact
    from tests.harness.servers import free_port

    work = Path(tempfile.mkdtemp(prefix=f"bench_hourly_{name}_"))
    port = free_port()
    server = start_server(work / "mongo", port)
    uri = mongo_uri("127.0.0.1", port)
    try:
        wait_until_serving(uri, server)
        db = connect(uri)["bench"]
        t0 = time.perf_counter()
        write_source(db, hours_data.source)
        record_dataset(db, hours_data.source, source=name)
        load_seconds = time.perf_counter() - t0
        env = {**os.environ, "BATCHREC_HOME": str(work / "home"), "MONGODB_URI": uri,
               "MONGODB_DATABASE": "bench", "BATCHREC_DEPLOYMENT": "local",
               "DAGSTER_HOME": str(work / "dagster_home"), "OMP_WAIT_POLICY": "PASSIVE",
               "BATCHREC_FULL_RUN_HOUR": str(args.full_run_hour)}
        full_training = {**args.full_training, "seed": seed}
        if plan == "cost":
            full_training["epochs"] = args.cost_full_epochs
        full_ops = {**FULL, "recvae_model": {**FULL["recvae_model"], **full_training}}
        warm_ops = {"recvae_model": {**args.warm_training, "seed": seed}}
        hours = tuple(range(1, args.cost_hours + 1)) if plan == "cost" else (1, 2, 3)
        steps = [("H full", keys[0], full_ops)] + [(f"H+{i} warm", keys[i], warm_ops) for i in hours]
        if plan == "hours":
            steps.append(("H+3 full retrain", keys[3], full_ops))
        if plan == "hours" and args.comparator:
            # the same full retrain from another initialisation: how far apart two full retrains of
            # one hour score on these users, i.e. the resolution of the warm / full ratio
            other = {"recvae_model": {**full_ops["recvae_model"], "seed": seed + COMPARATOR_SEED_OFFSET}}
            steps.append((COMPARATOR, keys[3], {**full_ops, **other}))
        runs = []
        first_vocabulary = None
        loaded = len(hours_data.source.star_user_ids)
        print(f"{name}: {loaded:,} stars loaded in {load_seconds:.0f} s", flush=True)
        for label, key, ops in steps:
            print(f"{label} ({key}) ...", flush=True)
            result = run_hour(env, key, ops)
            entry = db[MODELS].find_one({"run_id": result["run_id"]})
            store = LocalBlobStore(work / "home" / "storage" / "models")
            model = load_artifact(store.read(entry["file_name"])).recommender
            end = partition_window(key)[1]
            if first_vocabulary is None:
                first_vocabulary = model.item_ids
            # new repositories: known to this model, unknown to H's
            new_ids = np.setdiff1d(model.item_ids, first_vocabulary)
            result.update(label=label, partition_key=key, vocabulary=int(model.n_items),
                          new_repositories=int(len(new_ids)),
                          test={**score_test_users(hours_data, model, end),
                                **new_repository_recall(hours_data, model, end, new_ids)})
            vae = work / "home" / "storage" / "assets" / "vae_input" / key / f"{result['run_id']}.npz"
            result["vae_input_sha256"] = _validation_digest(vae)
            runs.append(result)
            print(_row(result), flush=True)
        return {"name": name, "plan": plan, "seed": seed, "description": hours_data.description,
                "load_seconds": load_seconds,
                "partition_keys": keys, "runs": runs,
                "stars_in_mongodb": len(hours_data.source.star_user_ids),
                "test_users": int(len(set(hours_data.test_user_ids.tolist())))}
    finally:
        shutil.rmtree(work / "home", ignore_errors=True)  # the artifacts and snapshots of this case
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:  # nx-27017 sometimes swallows SIGTERM
            server.kill()
            server.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


def _validation_digest(path: Path) -> str:
    """Which users a vae_input held out (validation and test): the warm and the full run of H+3
    must share them."""
    import hashlib

    from batchrec_dagster.storage.codec import decode

    value = decode(path.read_bytes())
    parts = [value.validation_user_ids, value.validation_target.indices]
    if value.test_user_ids is not None:
        parts += [value.test_user_ids, value.test_target.indices]
    return hashlib.sha256(b"".join(p.tobytes() for p in parts)).hexdigest()[:12]


def _row(r: dict[str, Any]) -> str:
    raw, model = r["metadata"]["raw_repositories"], r["metadata"]["recvae_model"]
    return (f"{r['label']}: {r['wall_seconds']:.1f}s, read {raw.get('read_mode')} ({raw.get('stars_read')} "
            f"docs), {model.get('training_mode')} {model.get('epochs')} epochs, score ndcg@100 "
            f"{model.get('score'):.4f}, bench ndcg@100 {r['test']['ndcg@100']:.4f}, "
            f"peak {r['peak_rss_mb']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, default=40000)
    parser.add_argument("--repos", type=int, default=20000)
    parser.add_argument("--stars-per-user", type=float, default=25.0)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--test-users", type=int, default=1000, help="users no model sees, for scoring")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-github", action="store_true")
    parser.add_argument("--hour", default="2026-06-01-10:00",
                        help="partition H (KST); H..H+3 must not be the full-run hour")
    parser.add_argument("--full-run-hour", type=int, default=4)
    parser.add_argument("--full-epochs", type=int, help="epochs of the full runs (default: the pipeline's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="github-stars-tiny: one simulation and training seed per case")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--cost-scales", type=int, nargs="+", default=[1, 4],
                        help="cost cases: the demo with these many times the users and days (the same "
                             "stars per hour), a short full run for H and one warm hour each")
    parser.add_argument("--cost-full-epochs", type=int, default=1)
    parser.add_argument("--cost-hours", type=int, choices=(1, 2, 3), default=3,
                        help="warm hours per cost case (H+1..); the ratio compares their medians")
    parser.add_argument("--comparator", action="store_true",
                        help="github: one more full retrain of H+3 from another initialisation, to measure "
                             "how much two full retrains differ on the bench users")
    parser.add_argument("--warm", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="override the warm runs' recvae_model config (e.g. warm_learning_rate=5e-4)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "hourly")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
        return
    from hourly_data import csv_hours, demo_hours

    from batchrec_dagster.defs.partitions import partition_window
    from batchrec_dagster.settings import PARTITION_KEY_FORMAT
    from batchrec_dagster.sources.demo_data import DemoSpec

    args.full_training = {"epochs": args.full_epochs} if args.full_epochs else {}
    args.warm_training = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.warm)}
    # KST has no daylight saving time: the next partitions are the next wall-clock hours
    first = datetime.strptime(args.hour, PARTITION_KEY_FORMAT)
    keys = [(first + timedelta(hours=i)).strftime(PARTITION_KEY_FORMAT) for i in range(4)]
    windows = [partition_window(k) for k in keys]
    report: dict[str, Any] = {"command": shlex.join([Path(sys.executable).name, *sys.argv]),
                              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}",
                              "uptime_before": _uptime(), "cases": []}
    if not args.skip_demo:
        spec = DemoSpec(users=args.users, repos=args.repos, mean_stars_per_user=args.stars_per_user,
                        days=args.days)
        report["cases"].append(run_case("demo", demo_hours(spec, windows[3][1], args.test_users), keys, args))
    if not args.skip_github and (args.dataset / "stars.csv").is_file():
        for seed in args.seeds:
            data = csv_hours(args.dataset, [w[0] for w in windows], args.test_users, seed=seed)
            report["cases"].append(run_case(f"github seed {seed}", data, keys, args, seed=seed))
    for scale in [] if args.skip_cost else args.cost_scales:
        spec = DemoSpec(users=args.users * scale, repos=args.repos,
                        mean_stars_per_user=args.stars_per_user, days=args.days * scale)
        report["cases"].append(run_case(f"demo x{scale} (cost)", demo_hours(
            spec, windows[3][1], args.test_users), keys, args, plan="cost"))
    report["uptime_after"] = _uptime()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    from hourly_report import markdown

    args.output.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {args.output.with_suffix('.md')}")


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


if __name__ == "__main__":
    main()
