"""What the comparable evaluation adds to an hourly run, at 5,000 and 20,000 repositories.

    python benchmarks/bench_evaluation.py [--sizes 5000,20000] [--users 12000] [--candidates 24]

For each catalogue size: an embedded MongoDB (nx-27017, own port and folder) with generated
GitHub-shaped stars over the last 2 days (`--users` users, 25 stars each on average: about 6,000
stars an hour); `--candidates` registered models with the pipeline's dimensions (hidden 600,
latent 200, every repository a column), one per hour before the window, as an hourly pipeline
holds after a day; then `model_evaluation_job` for the newest closed hour, in process, timed. The
models are untrained (random weights): the cost of loading and scoring does not depend on what
they learned. Prints a markdown table; the evaluation's own metadata gives the breakdown.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedded import stop_embedded  # noqa: E402 - the benchmarks folder is not a package


def setup(home: Path, port: int, repos: int, users: int, candidates: int, key: str):
    from batchrec_dagster.defs.partitions import partition_window
    from batchrec_dagster.deployments import blob_store_for, open_database
    from batchrec_dagster.registry.models import ensure_indexes, register_model
    from batchrec_dagster.settings import load_settings
    from batchrec_dagster.sources.demo_data import DemoSpec, load_demo
    from recvae import Recommender, RecVAE, RecVAEConfig, dump_artifact

    settings = load_settings({"BATCHREC_HOME": str(home), "BATCHREC_MONGO_PORT": str(port),
                              "BATCHREC_DEPLOYMENT": "local"})
    db = open_database(settings)
    start, end = partition_window(key)
    started = time.perf_counter()
    load_demo(db, DemoSpec(users=users, repos=repos, topics=16, mean_stars_per_user=25, days=2), end=end)
    load_s = time.perf_counter() - started
    ensure_indexes(db)
    store = blob_store_for(settings)
    item_ids = np.sort(np.asarray([d["_id"] for d in db.repositories.find({}, {"_id": 1})], dtype=np.int64))
    config = RecVAEConfig(hidden_dim=600, latent_dim=200)
    for age in range(candidates):
        model = RecVAE(len(item_ids), RecVAEConfig(**{**config.to_dict(), "seed": age}))
        data = dump_artifact(Recommender(model, item_ids, np.ones(len(item_ids), np.float32)),
                             config=config, metrics={})
        blob = store.put_new(f"bench_{repos}_{age}.pt", data)
        data_end = start - timedelta(hours=age)
        register_model(db, {"run_id": f"bench-{age}", "partition_key": f"bench-{age}", "model_kind": "recvae",
                            "score": 0.0, "file_name": blob.name, "bucket": store.location,
                            "sha256": blob.sha256, "size_bytes": blob.size_bytes,
                            "data_start": data_end - timedelta(hours=1), "data_end": data_end})
    return settings, db, load_s, blob.size_bytes, db.stars.estimated_document_count()


def measure(repos: int, users: int, candidates: int, port: int) -> dict:
    import dagster as dg

    from batchrec_dagster.cli.materialize import asset_metadata, materialize_partition
    from batchrec_dagster.defs.automation.star_arrivals import latest_closed_partition
    from batchrec_dagster.defs.jobs import EVALUATION_JOB_NAME

    key = latest_closed_partition(datetime.now(UTC))[0]
    with tempfile.TemporaryDirectory(prefix=f"bench-eval-{repos}-") as tmp:
        home = Path(tmp)
        try:
            settings, db, load_s, artifact_bytes, stars = setup(home, port, repos, users, candidates, key)
            with dg.DagsterInstance.ephemeral() as instance:
                started = time.perf_counter()
                result = materialize_partition(key, settings=settings, instance=instance,
                                               job_name=EVALUATION_JOB_NAME)
                wall = time.perf_counter() - started
            meta = asset_metadata(result, "model_evaluation")
            db.client.close()
        finally:
            stop_embedded(home / "mongo")
    scored = meta.get("candidates", 0) - meta.get("not_scored", 0)
    return {"repos": repos, "users": users, "window_users": meta.get("users"), "targets": meta.get("targets"),
            "history": meta.get("history_stars_read"), "stars": stars,
            "candidates": meta.get("candidates"), "scored": scored,
            "artifact_mb": artifact_bytes / 1e6, "read_s": meta.get("window_read_seconds"),
            "scoring_s": meta.get("scoring_seconds"), "asset_s": meta.get("evaluation_seconds"),
            "run_s": wall, "load_s": load_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--users", type=int, default=12000)
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--port", type=int, default=27232)
    args = parser.parse_args()
    load_before = os.getloadavg()
    began = datetime.now(UTC)
    rows = [measure(int(size), args.users, args.candidates, args.port) for size in args.sizes.split(",")]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Command: `python benchmarks/bench_evaluation.py --sizes {args.sizes} --users {args.users} "
          f"--candidates {args.candidates}`  ")
    loads = " ".join(f"{x:.2f}" for x in load_before), " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Started {began.isoformat(timespec='seconds')} on {os.cpu_count()} CPUs; load average before "
          f"{loads[0]}, after {loads[1]}; peak RSS of the benchmark process {peak_mb:.0f} MB.\n")
    print("| repositories | stars in MongoDB | window users scored | their earlier stars read "
          "| held-out stars | candidates scored | artifact MB | read window s | load + score all s "
          "| asset s | job run s | per candidate s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per = r["scoring_s"] / r["scored"] if r["scored"] else float("nan")
        print(f"| {r['repos']:,} | {r['stars']:,} | {r['window_users']:,} | {r['history']:,} | "
              f"{r['targets']:,} | {r['scored']} | "
              f"{r['artifact_mb']:.0f} | {r['read_s']:.2f} | {r['scoring_s']:.1f} | {r['asset_s']:.1f} | "
              f"{r['run_s']:.1f} | {per:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
