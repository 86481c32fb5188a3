"""`ivfpq` in inner-product form against the Euclidean form `recvae.ann` builds (`euclidean_rows`):
recall@20 against exact and ms per user in batches of 16 (1 thread), same rows, queries and lists.

Forms (each IVF with 2*sqrt(n) lists, 4-bit PQ fast-scan codes, exact re-ranking: faiss
`IVF{nlist},PQ{m}x4fs,RFlat`):
- `ip`: inner product over the 201-dimensional rows (latent + bias); 201 is odd, so codes of one
  dimension (the previous default);
- `ip-padded`: inner product over the rows with a zero column (202 dimensions), codes of two;
- `euclidean`: L2 over `euclidean_rows` (202 dimensions), codes of one or two dimensions.
Rows and queries: ann_compare.py's `fitted` source (a Gaussian fitted to a RecVAE trained on
github-stars-tiny, its held-out users' codes).

    python benchmarks/ann_euclidean.py --items 1000000 --cache /tmp/ann_rows.npz \
        --forms ip:1 ip-padded:2 euclidean:2 euclidean:1 --knobs 192:8 256:8 192:16 256:16
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np
from ann_compare import DATASET, exact_labels, fitted_rows, time_batches, trained_rows
from machine import cpu_model

from recvae.ann import IVF_KMEANS_ITER, IVF_TRAIN_PER_LIST, euclidean_rows, query_vectors, recall_at_k

K = 20


def build(rows: np.ndarray, metric: int, sub_dims: int, nlist: int) -> tuple[object, float]:
    started = time.perf_counter()
    dim = rows.shape[1]
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{dim // sub_dims}x4fs,RFlat", metric)
    faiss.extract_index_ivf(index).cp.niter = IVF_KMEANS_ITER
    rng = np.random.default_rng(0)
    sample = rng.choice(len(rows), min(len(rows), nlist * IVF_TRAIN_PER_LIST), replace=False)
    index.train(rows[np.sort(sample)])
    index.add(rows)
    return index, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--forms", nargs="+", default=["ip:1", "ip-padded:2", "euclidean:2"],
                        help="FORM:DIMENSIONS_PER_CODE")
    parser.add_argument("--knobs", nargs="+", default=["192:16", "256:16"], help="NPROBE:REFINE")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--cache", type=Path, help="ann_compare.py's .npz of trained rows and codes")
    parser.add_argument("--build-threads", type=int, default=2)
    parser.add_argument("--lists-per-sqrt", type=float, default=2.0,
                        help="IVF lists per sqrt(items) (recvae.ann.IVF_LISTS_PER_SQRT_N builds 2)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    trained, codes = trained_rows(args.dataset, 10, args.cache)
    vectors = fitted_rows(trained, args.items)
    queries = query_vectors(codes)
    exact = exact_labels(vectors, queries, K)
    zero = np.zeros((len(queries), 1), np.float32)
    nlist = int(args.lists_per_sqrt * np.sqrt(args.items))
    report = {"items": args.items, "queries": len(queries), "nlist": nlist,
              "cpu": f"{cpu_model()} x {os.cpu_count()}", "load_before": os.getloadavg(), "rows": []}
    for spec in args.forms:
        form, sub_dims = spec.split(":")
        if form == "ip":
            rows, q, metric = vectors, queries, faiss.METRIC_INNER_PRODUCT
        elif form == "ip-padded":
            padded = np.hstack([vectors, np.zeros((len(vectors), 1), np.float32)])
            rows, q, metric = padded, np.hstack([queries, zero]), faiss.METRIC_INNER_PRODUCT
        else:
            rows, q, metric = euclidean_rows(vectors), np.hstack([queries, zero]), faiss.METRIC_L2
        faiss.omp_set_num_threads(args.build_threads)
        index, seconds = build(np.ascontiguousarray(rows), metric, int(sub_dims), nlist)
        faiss.omp_set_num_threads(1)
        ivf = faiss.extract_index_ivf(index)
        for knob in args.knobs:
            nprobe, refine = map(int, knob.split(":"))
            ivf.nprobe, index.k_factor = nprobe, float(refine)
            found = index.search(q, K)[1]
            row = {"form": form, "dims_per_code": int(sub_dims), "nprobe": nprobe, "refine": refine,
                   "build_s": round(seconds, 1), "imbalance": round(ivf.invlists.imbalance_factor(), 2),
                   "recall@20": round(recall_at_k(found, exact), 4),
                   "batch16_ms_per_user": round(time_batches(lambda b, i=index: i.search(b, K), q), 3)}
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
        del index
    report["load_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
