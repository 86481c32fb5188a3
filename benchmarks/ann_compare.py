"""Which maximum-inner-product index serves RecVAE's decoder: build time, recall@20 against exact,
query latency (1 thread, as a worker answers: one user per search, a batch of BATCH users in one
search, and the server's path, `search_excluding` of a batch with EXCLUDED random own items per
user) and size.

Decoder rows come from two sources, stated in the output:
- `trained`: RecVAE trained a few epochs on github-stars-tiny (../shared), its own decoder rows;
  queries are the codes z of held-out users.
- `fitted`: n synthetic decoder rows drawn from a Gaussian with the trained rows' mean and
  covariance (bias included), queried with the same held-out users' codes: a large catalog
  with the geometry of a trained one.
- `untrained`: the decoder's initialisation (uniform), queried with the untrained encoder's codes
  of random users: no structure at all, the hardest case.

    python benchmarks/ann_compare.py --items 200000 --out benchmarks/results/ann_compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from recvae import ann
from recvae.ann import (
    IndexParams,
    build_index,
    exact_top_k,
    query_vectors,
    recall_at_k,
    search_excluding,
    serialize,
    set_search_params,
)

DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "github-stars-tiny"
BATCH = 16  # the server answers concurrent requests in one micro-batch (16 connections)
EXCLUDED = 50  # own repositories per user, as bench_serving.py's requests star


def trained_rows(dataset: Path, epochs: int, cache: Path | None, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The trained decoder rows (bias appended) and the held-out users' codes, from `cache` (an
    .npz a previous run wrote with the same dataset and epochs) or by training."""
    if cache is not None and cache.exists():
        with np.load(cache) as saved:
            return saved["vectors"], saved["codes"]
    from recvae.ann import decoder_vectors

    model, codes = trained_model(dataset, epochs, seed)
    vectors = decoder_vectors(model)
    if cache is not None:
        np.savez(cache, vectors=vectors, codes=codes)
    return vectors, codes


def fitted_rows(trained: np.ndarray, n_items: int, seed: int = 0) -> np.ndarray:
    """`n_items` decoder rows (bias last) drawn from a Gaussian with the trained rows' mean and
    covariance: a large catalog with the geometry of a trained one (the `fitted` source)."""
    rng = np.random.default_rng(seed)
    mean, cov = trained.mean(0), np.cov(trained, rowvar=False)
    return rng.multivariate_normal(mean, cov, size=n_items, method="cholesky").astype(np.float32)


def exact_labels(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """[queries, k]: each query's exact top-k rows (the reference recall is measured against)."""
    none = np.zeros(0, np.int64)
    return np.stack([exact_top_k(vectors, q, none, k)[0] for q in queries])


def recall_on_codes(index, vectors: np.ndarray, codes: np.ndarray, k: int) -> float:
    """recall@k of `index` (its search knobs as set) against exact, for users' codes z."""
    queries = query_vectors(codes)
    return recall_at_k(ann.search(index, queries, k)[1], exact_labels(vectors, queries, k))


def trained_model(dataset: Path, epochs: int, seed: int = 0):
    from recvae import RecVAEConfig, split_users, train_recvae
    from recvae.ann import user_codes
    from recvae.datasets import load_github_stars

    split = split_users(load_github_stars(dataset), n_validation=200, n_test=300, seed=seed)
    result = train_recvae(split.train, split.validation, RecVAEConfig(epochs=epochs, seed=seed),
                          device="cpu")
    assert split.test is not None
    return result.model, user_codes(result.model, split.test.fold_in)


def time_queries(index, queries: np.ndarray, k: int) -> tuple[float, float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        ann.search(index, q[None, :], k)
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def time_batches(search, queries: np.ndarray) -> float:
    """Mean ms per query of `search(batch)` over consecutive batches of BATCH queries."""
    started = time.perf_counter()
    for at in range(0, len(queries), BATCH):
        search(queries[at:at + BATCH])
    return (time.perf_counter() - started) / len(queries) * 1e3


def compare(vectors: np.ndarray, queries: np.ndarray, k: int, configs: list[IndexParams],
            hnswlib_m: int | None, threads: int = 1, build_threads: int = 1) -> list[dict]:
    import faiss

    exact = exact_labels(vectors, queries, k)
    started = time.perf_counter()
    for q in queries:
        exact_top_k(vectors, q, np.zeros(0, np.int64), k)
    exact_ms = (time.perf_counter() - started) / len(queries) * 1e3
    rows = [{"library": "numpy exact", "kind": "exact", "build_s": 0.0, "recall@20": 1.0,
             "p50_ms": exact_ms, "p99_ms": None, "size_mb": vectors.nbytes / 2**20}]
    built: dict[tuple, tuple[object, float]] = {}
    own = [np.random.default_rng(row).choice(len(vectors), min(EXCLUDED, len(vectors) // 2), replace=False)
           for row in range(len(queries))]
    for params in configs:
        key = (params.kind, params.hnsw_m, params.ef_construction, params.nlist)
        if key not in built:  # one build per structure; the query knobs vary on it
            faiss.omp_set_num_threads(build_threads)  # as the training run builds it
            started = time.perf_counter()
            built[key] = (build_index(vectors, params), time.perf_counter() - started)
            faiss.omp_set_num_threads(threads)  # as a worker searches
        index, build = built[key]
        params = params.resolved(len(vectors))
        set_search_params(index, params)
        _, labels = ann.search(index, queries, k)
        p50, p99 = time_queries(index, queries, k)
        batch_ms = time_batches(lambda batch, index=index: ann.search(index, batch, k), queries)
        excluding_ms = time_batches(
            lambda batch, index=index: search_excluding(index, batch, own[:len(batch)], k), queries)
        knob = (f"M={params.hnsw_m} efC={params.ef_construction} efS={params.ef_search}"
                if params.kind == "hnsw" else f"nlist={params.nlist} nprobe={params.nprobe}"
                + (f" refine={params.refine}" if params.kind == "ivfpq" else "")
                if params.kind in ("ivf", "ivfpq") else "")
        rows.append({"library": "faiss-cpu", "kind": params.kind, "params": knob, "build_s": build,
                     "recall@20": recall_at_k(labels, exact), "p50_ms": p50, "p99_ms": p99,
                     f"batch{BATCH}_ms_per_query": batch_ms,
                     f"batch{BATCH}_excluding_ms_per_query": excluding_ms,
                     "size_mb": len(serialize(index)) / 2**20})
        print(rows[-1], flush=True)
    if hnswlib_m:
        try:
            import hnswlib
        except ImportError:
            print("hnswlib not installed: skipped")
        else:
            for ef in (128, 256):
                started = time.perf_counter()
                h = hnswlib.Index(space="ip", dim=vectors.shape[1])
                h.init_index(max_elements=len(vectors), M=hnswlib_m, ef_construction=40)
                h.add_items(vectors, num_threads=1)
                build = time.perf_counter() - started
                h.set_ef(ef)
                labels, _ = h.knn_query(queries, k=k)
                times = []
                for q in queries:
                    t0 = time.perf_counter()
                    h.knn_query(q[None, :], k=k)
                    times.append(time.perf_counter() - t0)
                rows.append({"library": "hnswlib", "kind": "hnsw",
                             "params": f"M={hnswlib_m} efC=40 ef={ef}", "build_s": build,
                             "recall@20": recall_at_k(labels.astype(np.int64), exact),
                             "p50_ms": float(np.percentile(times, 50) * 1e3),
                             "p99_ms": float(np.percentile(times, 99) * 1e3), "size_mb": None})
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--source", choices=("fitted", "untrained", "trained"), default="fitted")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--kinds", default="flat,hnsw,ivf,ivfpq")
    parser.add_argument("--ef", default="64,128,256")
    parser.add_argument("--nprobe", default="128,256")
    parser.add_argument("--refine", default="8", help="ivfpq: candidates re-ranked per result")
    # the integer knobs: flag, default (None: recvae.ann's), help
    for flag, default, text in (
            ("--pq-sub-dims", None, "ivfpq: dimensions per 4-bit sub-quantizer (default "
                                    "recvae.ann.IVFPQ_SUB_DIMS)"),
            ("--nlist", None, "IVF lists (default: recvae.ann's 2*sqrt(n))"),
            ("--m", 32, "HNSW links per node"),
            ("--efc", 40, "HNSW construction beam"),
            ("--hnswlib", 0, "also hnswlib with this M"),
            ("--threads", 1, "search threads (a worker's)"),
            ("--build-threads", 2, "build threads (training's)")):
        parser.add_argument(flag, type=int, default=default, help=text)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path,
                        help="keep the trained rows and codes here (.npz) for later runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.pq_sub_dims:
        ann.IVFPQ_SUB_DIMS = args.pq_sub_dims
    load_before = os.getloadavg()
    if args.source == "untrained":
        import scipy.sparse as sp

        from recvae import RecVAE, RecVAEConfig
        from recvae.ann import decoder_vectors, user_codes

        model = RecVAE(args.items, RecVAEConfig())
        users = sp.random(args.queries, args.items, density=50 / args.items, format="csr",
                          random_state=0, dtype=np.float32)
        users.data[:] = 1
        vectors, codes = decoder_vectors(model), user_codes(model, users)
    else:
        trained, codes = trained_rows(args.dataset, args.epochs, args.cache)
        if args.source == "trained":
            vectors = trained
        else:
            vectors = fitted_rows(trained, args.items)
        codes = codes[:args.queries]
    queries = query_vectors(codes)
    configs: list[IndexParams] = []
    for kind in args.kinds.split(","):
        if kind == "hnsw":
            configs += [IndexParams("hnsw", hnsw_m=args.m, ef_construction=args.efc, ef_search=int(ef))
                        for ef in args.ef.split(",")]
        elif kind in ("ivf", "ivfpq"):
            configs += [IndexParams(kind, nprobe=int(p), nlist=args.nlist, refine=int(r))
                        for p in args.nprobe.split(",")
                        for r in (args.refine.split(",") if kind == "ivfpq" else [IndexParams().refine])]
        else:
            configs.append(IndexParams(kind))
    rows = compare(vectors, queries, 20, configs, args.hnswlib or None, args.threads, args.build_threads)
    report = {"source": args.source, "items": len(vectors), "dim": vectors.shape[1],
              "queries": len(queries), "threads": args.threads, "build_threads": args.build_threads,
              "load_before": load_before,
              "load_after": os.getloadavg(),
              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rows": rows}
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
