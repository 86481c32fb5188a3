"""Where the approximate path starts to pay: the server's exact scorer (`BatchScorer`) against its
approximate one (`ApproxScorer`, faiss HNSW) on the same model, in this process, 1 thread, for
one user per call and for a batch of 16 (what 16 concurrent requests share). RecVAE at the
paper's size (hidden 600, latent 200), untrained weights (they cost what trained ones cost).

    python benchmarks/ann_switchover.py --items 2000 5000 10000 20000 50000
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def timed(fn, calls: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, nargs="+", default=[2000, 5000, 10000, 20000, 50000])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    import faiss

    from batchrec_dagster.serving.model.ann_index import ApproxScorer
    from batchrec_dagster.serving.model.scoring import BatchScorer
    from recvae import Recommender, RecVAE, RecVAEConfig, ann

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rows = []
    print(json.dumps({"load_before": os.getloadavg()}))
    for n in args.items:
        rng = np.random.default_rng(n)
        model = RecVAE(n, RecVAEConfig(seed=0))
        exact = BatchScorer(Recommender(model, np.arange(n), rng.zipf(1.5, n).astype(np.float32)))
        started = time.perf_counter()
        index = ann.build_index(ann.decoder_vectors(model), ann.IndexParams("hnsw"))
        build = time.perf_counter() - started
        approx = ApproxScorer(exact, index)
        users = [rng.choice(n, 50, replace=False).astype(np.int64) for _ in range(16)]
        row = {"items": n, "build_s": round(build, 2)}
        for label, scorer in (("exact", exact), ("approx", approx)):
            for size, calls in ((1, args.calls), (16, args.calls // 4)):
                batch = users[:size]
                ms = timed(lambda s=scorer, b=batch: s.recommend(b, 20), calls)
                row[f"{label}_{size}_ms"] = round(ms, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
