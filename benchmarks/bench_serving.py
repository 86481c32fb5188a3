"""Serving benchmark: `batchrec serve` driven over HTTP on loopback by concurrent clients.

For a model of 5,000 and of 50,000 items (RecVAE at the paper's size: hidden 600, latent 200;
weights untrained, which costs exactly what trained ones cost) it measures p50/p99 latency and
requests per second of `POST /recommendations` (50 starred repositories in, k=20 out) at 1 and
16 concurrent clients, next to the floor: the bare forward pass of the same model on the same
inputs in this process, and the full `Recommender.recommend` call. A phase keeps 16 clients
running while the server's poller swaps in new models, and counts errors; with `--workers` the
rows repeat for each number of worker processes; with `--drain` a last phase sends SIGTERM under
load and counts the requests in flight that completed.

Everything is real: embedded MongoDB (nx-27017) holds the registry, artifacts sit in a local
store, the server is the `batchrec serve` entry point in its own process. The load generator is a
small asyncio HTTP/1.1 keep-alive client (one process, so its cost on the shared cores is low),
bounded in requests and seconds, and it only ever connects to 127.0.0.1.

    python benchmarks/bench_serving.py                # full run, writes benchmarks/results/serving.*
    python benchmarks/bench_serving.py --quick        # a short smoke run, writes nothing
    python benchmarks/bench_serving.py --workers 1 2 4 --threads 1 --inference batched --clients 16 \
        --swaps 0 --drain --name serving_workers    # worker processes, and a SIGTERM under load

About 500 lines: the phases and the report of one benchmark read best together; the load side
(clients, wrk, the drain's client) is in serving_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ann_compare import DATASET, fitted_rows, recall_on_codes, trained_rows  # noqa: E402
from serving_load import (  # noqa: E402
    GENERATORS,
    HOST,
    STARRED_PER_REQUEST,
    K,
    children_of,
    cpu_seconds,
    drain_summary,
    drive,
    drive_through_signal,
    drive_wrk,
    free_port,
    load_average,
    wrk_available,
)

from batchrec_dagster.registry.models import ensure_indexes, register_model  # noqa: E402
from batchrec_dagster.sources.embedded_mongo import mongo_uri, start_server, wait_until_serving  # noqa: E402
from batchrec_dagster.sources.mongo import connect  # noqa: E402
from batchrec_dagster.storage.blobs import LocalBlobStore  # noqa: E402

TARGET_P99_MS = 10.0
TARGET_OVERHEAD = 2.0


# -- artifacts and registry ------------------------------------------------------------------------

def make_artifact(n_items: int, seed: int, trained_rows: np.ndarray | None = None
                  ) -> tuple[bytes, np.ndarray]:
    """A RecVAE artifact of `n_items` repositories, untrained; with `trained_rows` (a trained
    model's decoder rows, bias last) its decoder rows are drawn from their Gaussian, as
    ann_compare.py's `fitted` source draws them, so that an index's recall is a trained model's."""
    import torch

    from recvae import Recommender, RecVAE, RecVAEConfig, dump_artifact

    rng = np.random.default_rng(seed)
    item_ids = np.sort(rng.choice(10**8, size=n_items, replace=False)).astype(np.int64)
    config = RecVAEConfig(seed=seed)
    model = RecVAE(n_items, config)
    if trained_rows is not None:
        rows = torch.from_numpy(fitted_rows(trained_rows, n_items, seed))
        with torch.no_grad():
            model.decoder.weight.copy_(rows[:, :-1])
            model.decoder.bias.copy_(rows[:, -1])
    recommender = Recommender(model, item_ids, rng.zipf(1.5, n_items).clip(max=10**6).astype(np.float32))
    names = [f"owner{i % 997}/repo-{i}" for i in item_ids.tolist()]
    data = dump_artifact(recommender, config=config, metrics={"ndcg@100": 0.0},
                         extra={"item_names": names})
    return data, item_ids


def register(db: Any, store: LocalBlobStore, data: bytes, score: float) -> dict[str, Any]:
    run_id = uuid.uuid4().hex
    data_end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    blob = store.put_new(f"bench_{run_id}.safetensors", data)
    return register_model(db, {
        "run_id": run_id, "partition_key": "bench", "model_kind": "recvae", "score": score,
        "file_name": blob.name, "bucket": store.location, "uri": blob.uri, "sha256": blob.sha256,
        "size_bytes": blob.size_bytes, "data_start": data_end - timedelta(days=30),
        "data_end": data_end, "metrics": {}, "config": {}, "code_version": "bench", "epochs": 0,
    })


def register_index(db: Any, store: LocalBlobStore, recommender: Any, entry: dict[str, Any],
                   inputs: list[list[int]], threads: int, codes: np.ndarray | None = None
                   ) -> dict[str, Any]:
    """Build the model's top-k index as recvae_model does (`auto`: the kind recvae.ann picks for
    the catalog, `threads` threads), store it next to the artifact, measure its recall@20 against
    exact and name it in the registry entry, so that the server loads it instead of building its
    own. Recall: on `codes` (held-out users of the trained model the `fitted` weights come from)
    when given, else on the benchmark's users (random sets of 50 repositories through the
    untrained encoder); the method is stated in the report."""
    import faiss

    from recvae import ann
    from recvae.inference import lists_to_csr

    faiss.omp_set_num_threads(threads)  # `recommender`: the floor's copy (one copy at 10^6 items)
    params = ann.IndexParams("auto").resolved(recommender.n_items)
    built = ann.build_for_model(recommender.model, params)
    if codes is not None:
        index = ann.deserialize(built.data, n_items=built.n_items, dim=built.dim)
        ann.set_search_params(index, params)
        faiss.omp_set_num_threads(1)  # the exact reference is numpy's
        recall = {"recall": recall_on_codes(index, ann.decoder_vectors(recommender.model), codes, K),
                  "users": len(codes)}
    else:
        fold_in = lists_to_csr([recommender.index_of(np.asarray(u)).tolist() for u in inputs[:200]],
                               recommender.n_items)
        recall = ann.measure_recall(recommender.model, built.data, fold_in, k=K, params=params)
    blob = store.put_new(f"{entry['file_name']}.faiss", built.data)
    record = {**built.to_dict(), "file_name": blob.name, "sha256": blob.sha256,
              "size_bytes": blob.size_bytes, "artifact_sha256": entry["sha256"],
              "recall": recall["recall"], "recall_k": K, "recall_users": recall["users"],
              "build_threads": threads}
    db["models"].update_one({"_id": entry["_id"]}, {"$set": {"ann_index": record}})
    print(f"  index: {params.to_dict()} built in {record['build_seconds']}s ({threads} thread(s)), "
          f"{record['size_bytes'] / 2**20:.0f} MiB, recall@{K} {record['recall']:.4f}", flush=True)
    return record


def rss_mb(server: Server) -> list[float]:
    """Resident memory of each serving process (the server, or its workers when it has them)."""
    children = children_of(server.process.pid)
    out = []
    for pid in children or [server.process.pid]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        out.append(round(kb / 1024, 1))
    return out


def make_inputs(item_ids: np.ndarray, n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.choice(item_ids, STARRED_PER_REQUEST, replace=False).tolist() for _ in range(n)]


def start_registry(work: Path) -> tuple[subprocess.Popen, Any, LocalBlobStore, dict[str, str]]:
    """An embedded MongoDB (its process: the caller stops it) with a fresh registry database, a
    local artifact store under `work`, and the environment `batchrec serve` needs to use both."""
    mongo_port = free_port()
    mongo = start_server(work / "mongo", mongo_port)
    uri = mongo_uri(HOST, mongo_port)
    wait_until_serving(uri, mongo)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    db = connect(uri)[database]
    ensure_indexes(db)
    store = LocalBlobStore(work / "home" / "storage" / "models")
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DATABASE": database,
           "BATCHREC_HOME": str(work / "home"), "BATCHREC_DEPLOYMENT": "local",
           # the page's challenger is a second model to load in every worker: not what is measured
           "BATCHREC_SERVE_CHALLENGER": "false"}
    return mongo, db, store, env


# -- the floor: the model alone, in this process ---------------------------------------------------

class Floor:
    """The bare model in this process, same artifact, inputs and thread count as the server."""

    def __init__(self, data: bytes, inputs: list[list[int]], threads: int):
        import torch

        from batchrec_dagster.serving.model.scoring import BatchScorer
        from recvae import load_artifact

        torch.set_num_threads(threads)
        self.recommender = load_artifact(data).recommender
        self.scorer = BatchScorer(self.recommender)
        self.columns = [self.recommender.index_of(np.asarray(ids)) for ids in inputs]

    def _batch(self, users: list[np.ndarray]) -> Any:
        import torch

        from recvae.sparse import SparseBatch

        lengths = np.array([len(u) for u in users])
        return SparseBatch(
            indices=torch.from_numpy(np.concatenate(users)),
            offsets=torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]])),
            rows=torch.from_numpy(np.repeat(np.arange(len(users)), lengths)),
            values=torch.ones(int(lengths.sum())), counts=torch.from_numpy(lengths.astype(np.float32)),
            size=len(users))

    @staticmethod
    def _timed(fn: Any, items: list) -> tuple[np.ndarray, float]:
        """Wall ms per call, and CPU ms per call (not inflated by waiting for a core)."""
        for item in items[:10]:
            fn(item)
        out = []
        cpu = cpu_seconds()
        for item in items:
            start = time.perf_counter_ns()
            fn(item)
            out.append(time.perf_counter_ns() - start)
        return np.asarray(out) / 1e6, (cpu_seconds() - cpu) * 1e3 / len(items)

    def forward(self, users_per_pass: int, passes: int = 100) -> dict[str, float]:
        """The bare forward pass over `users_per_pass` users: c concurrent requests can at best
        share one pass over c users."""
        import torch

        c = users_per_pass
        batches = [self._batch(self.columns[i:i + c]) for i in range(0, len(self.columns) - c + 1, c)]
        batches = (batches * (passes // len(batches) + 1))[:passes]
        with torch.inference_mode():
            wall, cpu = self._timed(self.recommender.model, batches)
        return {"floor_ms": round(float(np.percentile(wall, 50)), 3),
                "floor_cpu_ms_per_user": round(cpu / c, 3)}

    def scorer_ms(self) -> dict[str, float]:
        """The server's own top-k call and recvae's Recommender.recommend, one user each."""
        import torch

        with torch.inference_mode():
            served, _ = self._timed(lambda c: self.scorer.recommend([c], K), self.columns[:200])
            full, _ = self._timed(lambda c: self.recommender.recommend([c], K), self.columns[:200])
        return {"scorer_p50_ms": round(float(np.percentile(served, 50)), 3),
                "recommender_recommend_p50_ms": round(float(np.percentile(full, 50)), 3)}


# -- the server ------------------------------------------------------------------------------------

class Server:
    """`batchrec serve` in its own process (with `workers` worker processes under it)."""

    def __init__(self, env: dict[str, str], *, threads: int, inference: str, poll_seconds: float,
                 log: Path, workers: int = 1, drain_seconds: float = 0.0, cwd: Path = ROOT,
                 options: list[str] | None = None):
        """`cwd` is the source tree the server runs from (its package first on the path: `python
        -m` puts the working directory there); `options` come last on the command line, so they
        win over the ones set here."""
        self.port = free_port()
        self.log = log
        self.workers = workers
        self.command = [sys.executable, "-m", "batchrec_dagster.serving.process.command", "serve",
                        "--host", HOST, "--port", str(self.port), "--poll-seconds", str(poll_seconds),
                        "--torch-threads", str(threads), "--inference", inference,
                        "--workers", str(workers), "--drain-seconds", str(drain_seconds),
                        "--log-level", "warning", *(options or [])]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(self.command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=cwd)

    def get(self, path: str) -> tuple[int, Any]:
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{path}", timeout=10) as resp:
                data = resp.read()
                return resp.status, json.loads(data) if path != "/metrics" else data.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def cpu(self) -> float:
        """CPU seconds of the server and its workers (the workers live as long as the server)."""
        pids = [self.process.pid, *children_of(self.process.pid)]
        return sum(cpu_seconds(pid) for pid in pids)

    def batches(self) -> tuple[float, float]:
        """Requests answered and forward passes run so far, summed over the workers (/metrics)."""
        text = self.get("/metrics")[1]
        values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                  if line.startswith("batchrec_inference_batch_size_")}
        return values.get("batchrec_inference_batch_size_sum", 0.0), \
            values.get("batchrec_inference_batch_size_count", 0.0)

    def wait_for_model(self, model_id: str, timeout_s: float = 300.0) -> None:
        """Until every worker serves `model_id` (each /model request opens a new connection, which
        the kernel hands to any worker)."""
        serving: dict[int, str] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                status, body = self.get("/model")
                if status == 200 and body.get("model"):
                    serving[body["worker"]["pid"]] = body["model"]["id"]
                if sum(1 for m in serving.values() if m == model_id) >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.1)  # waiting for a subprocess to load a model: polled with a deadline
        raise RuntimeError(f"model {model_id} not served by {self.workers} worker(s) after {timeout_s}s")

    def stop(self) -> int | None:
        self.process.terminate()
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


# -- the run ---------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    work = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    mongo, db, store, env = start_registry(work)
    results: dict[str, Any] = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_before": load_average()},
        "settings": {"starred_per_request": STARRED_PER_REQUEST, "k": K, "seconds": args.seconds,
                     "generator": args.generator, "swap_phase_generator": "python",
                     "hidden_dim": 600, "latent_dim": 200},
        "runs": [], "swap": None, "drain": None,
    }
    score = 0.0
    rows, codes = (trained_rows(args.dataset, args.epochs, args.cache) if args.weights == "fitted"
                   else (None, None))
    results["settings"]["weights"] = args.weights
    try:
        for n_items in args.items:
            data, item_ids = make_artifact(n_items, seed=n_items, trained_rows=rows)
            inputs = make_inputs(item_ids, 400, seed=1)
            for threads in args.threads:
                floor = Floor(data, inputs, threads)
                scorer = floor.scorer_ms()
                print(f"[{n_items} items, {threads} thread(s)] {scorer}", flush=True)
                for inference in args.inference:
                    for workers in args.workers:
                        for path in args.paths:
                            score += 1.0
                            entry = register(db, store, data, score)
                            index = (register_index(db, store, floor.recommender, entry, inputs,
                                                    args.build_threads, codes)
                                     if path == "approximate" else None)
                            # the switch-over (BATCHREC_ANN_MIN_ITEMS) decides the path per model
                            path_env = {**env, "BATCHREC_ANN_MIN_ITEMS": "1" if index else str(10**9)}
                            server = Server(path_env, threads=threads, inference=inference,
                                            poll_seconds=1.0, log=work / "server.log", workers=workers)
                            try:
                                server.wait_for_model(str(entry["_id"]), timeout_s=900)
                                # which path serves, and for the index: from the registry or rebuilt
                                top_k = server.get("/model")[1]["model"].get("top_k")
                                print(f"  /model top_k: {top_k}", flush=True)
                                asyncio.run(drive(server.port, inputs[:50], 4, 1.0))  # warm connections
                                for clients in args.clients:
                                    row = measure(args, server, floor, inputs, clients, work)
                                    row.update(items=n_items, threads=threads, inference=inference,
                                               workers=workers, path=path, rss_mb=rss_mb(server), top_k=top_k,
                                               **({"recall@20": index["recall"],
                                                   "index_kind": index["kind"],
                                                   "index_build_s": index["build_seconds"],
                                                   "index_mb": round(index["size_bytes"] / 2**20, 1)}
                                                  if index else {"recall@20": 1.0}), **scorer)
                                    results["runs"].append(row)
                            finally:
                                server.stop()
        if args.swaps:
            results["swap"] = swap_phase(args, db, store, env, work, score)
            score += args.swaps + 1
        if args.drain:
            results["drain"] = drain_phase(args, db, store, env, work, score + 1)
    finally:
        mongo.terminate()
        mongo.wait(30)
        shutil.rmtree(work, ignore_errors=True)  # the 50,000-item artifacts are 160 MB each
    results["machine"]["load_after"] = load_average()
    return results


def measure(args: argparse.Namespace, server: Server, floor: Floor, inputs: list[list[int]],
            clients: int, work: Path) -> dict[str, Any]:
    """One row: `clients` closed-loop clients for `args.seconds` against a ready server."""
    bare = floor.forward(clients)  # measured now, under the same load
    load = load_average()
    answered_before, passes_before = server.batches()
    cpu = server.cpu(), cpu_seconds()
    if args.generator == "wrk":
        summary, client_cpu = drive_wrk(server.port, inputs, clients, args.seconds, work)
    else:
        summary = asyncio.run(drive(server.port, inputs, clients, args.seconds)).summary()
        client_cpu = cpu_seconds() - cpu[1]
    server_cpu = server.cpu() - cpu[0]
    answered = max(summary["requests"], 1)
    answered_after, passes_after = server.batches()
    row = {"clients": clients, "generator": args.generator, "load_avg": load, **summary, **bare,
           "scorer_mode": server.get("/model")[1]["model"].get("scorer"),
           "mean_batch": round((answered_after - answered_before) / max(passes_after - passes_before, 1), 2),
           "server_cpu_ms_per_request": round(server_cpu * 1e3 / answered, 3),
           "client_cpu_ms_per_request": round(client_cpu * 1e3 / answered, 3)}
    row["overhead_vs_floor"] = round(row["p50_ms"] / row["floor_ms"], 2)
    row["cpu_overhead"] = round(row["server_cpu_ms_per_request"] / row["floor_cpu_ms_per_user"], 2)
    print(f"  {server.workers} worker(s) {args.generator} c={clients:2d} rps={row['rps']:8.1f} "
          f"p50={row['p50_ms']:.2f}ms p99={row['p99_ms']:.2f}ms floor={row['floor_ms']}ms "
          f"batch={row['mean_batch']} cpu/req server={row['server_cpu_ms_per_request']}ms "
          f"client={row['client_cpu_ms_per_request']}ms errors={row['errors']} load={load}", flush=True)
    return row


def drain_phase(args: argparse.Namespace, db: Any, store: LocalBlobStore, env: dict[str, str],
                work: Path, score: float) -> dict[str, Any]:
    """SIGTERM under load: 16 keep-alive clients against `--drain-workers` workers (5,000 items);
    the signal after 3 s; the clients go on (reconnecting when asked to close) until refused."""
    n_items = min(args.items)
    data, item_ids = make_artifact(n_items, seed=200)
    inputs = make_inputs(item_ids, 400, seed=3)
    entry = register(db, store, data, score)
    server = Server(env, threads=min(args.threads), inference=args.inference[0], poll_seconds=60.0,
                    log=work / "server.log", workers=args.drain_workers, drain_seconds=args.drain_seconds)
    try:
        server.wait_for_model(str(entry["_id"]))
        records, signalled = asyncio.run(drive_through_signal(
            server.port, inputs, 16, 3.0, server.process.terminate, args.drain_seconds + 60))
        code = server.process.wait(90)
        exited_after = time.monotonic() - signalled
    finally:
        if server.process.poll() is None:
            server.stop()
    summary = drain_summary(records, signalled)
    summary.update(items=n_items, clients=16, workers=args.drain_workers, drain_seconds=args.drain_seconds,
                   exit_status=code, exited_after_s=round(exited_after, 2), load_avg=load_average())
    print(f"[drain] {summary}", flush=True)
    return summary


def swap_phase(args: argparse.Namespace, db: Any, store: LocalBlobStore, env: dict[str, str],
               work: Path, score: float) -> dict[str, Any]:
    """16 clients against the 5,000-item model while the poller swaps in `swaps` better models."""
    n_items = min(args.items)
    models = [make_artifact(n_items, seed=100 + i)[0] for i in range(args.swaps + 1)]
    _, item_ids = make_artifact(n_items, seed=100)
    inputs = make_inputs(item_ids, 400, seed=2)
    # same vocabulary for every model (seeded ids), different weights
    first = register(db, store, models[0], score + 1)
    server = Server(env, threads=min(args.threads), inference=args.inference[0], poll_seconds=0.5,
                    log=work / "server.log")
    swapped: list[str] = [str(first["_id"])]
    try:
        server.wait_for_model(swapped[0])

        def publish_during_load() -> None:
            for i, data in enumerate(models[1:], start=2):
                time.sleep(args.seconds * 2 / (args.swaps + 1))  # spread the swaps over the phase
                entry = register(db, store, data, score + i)
                server.wait_for_model(str(entry["_id"]), timeout_s=60)
                swapped.append(str(entry["_id"]))

        phase = asyncio.run(drive(server.port, inputs, 16, args.seconds * 2 + 2,
                                  during=publish_during_load))
        _, status = server.get("/model")
    finally:
        server.stop()
    summary = phase.summary()
    summary.update(items=n_items, clients=16, swaps_done=len(swapped) - 1,
                   models_answering=len(summary["models_seen"]), server_swaps=status.get("swaps"),
                   last_swap_error=status.get("last_swap_error"))
    print(f"[swap] {summary['swaps_done']} swaps under load: {summary['requests']} requests, "
          f"{summary['errors']} errors, p99 {summary['p99_ms']}ms, models answering "
          f"{summary['models_answering']}", flush=True)
    return summary


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Serving benchmark", "",
        f"Command: `{results['command']}`  ",
        f"Started {results['started_at']} on {results['machine']['cpus']} CPUs "
        f"({results['machine']['cpu']}), torch {results['machine']['torch']}; "
        f"load average before {results['machine']['load_before']}, after "
        f"{results['machine']['load_after']} (the cores are shared with other work).", "",
        f"`POST /recommendations`, {STARRED_PER_REQUEST} starred repositories in, k={K}; "
        f"RecVAE hidden 600 / latent 200; closed-loop clients on 127.0.0.1 over keep-alive HTTP/1.1, "
        f"{results['settings']['seconds']}s per row. Floor = p50 of the bare model forward pass "
        f"(benchmark process, same thread count, measured just before the row) over a batch of as "
        f"many users as there are clients: 1 client, one user; 16 concurrent requests can at best "
        f"share one pass over 16 users. Overhead = server p50 / floor. Mean batch = requests per "
        f"forward pass in the server (micro-batching). Workers = `batchrec serve --workers N` processes "
        f"on the port. CPU ms/req = CPU time the server processes (all threads, all workers) and the "
        f"load generator spent per request; CPU overhead = server CPU per request / "
        f"CPU of the bare forward pass per user at that batch size. CPU times are barely affected "
        f"by other work on the machine, latencies are: 2 cores / (server + client CPU per request) "
        f"is what a quiet 2-core machine could sustain.", "",
        f"Load generator for the rows: **{results['settings'].get('generator', 'python')}** "
        f"({GENERATORS.get(results['settings'].get('generator', 'python'), '')}); "
        f"swap phase: the asyncio client (it checks each answer's model id and count). "
        f"Server inference: {', '.join(sorted({str(r.get('scorer_mode')) for r in results['runs']}))}.", "",
        "| items | workers | torch threads | inference | clients | req/s | p50 ms | p99 ms | errors "
        "| mean batch | floor ms | overhead | server CPU ms/req | CPU overhead | client CPU ms/req "
        "| load avg |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['items']:,} | {r.get('workers', 1)} | {r['threads']} | {r['inference']} | {r['clients']} "
            f"| {r['rps']:,.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {r['mean_batch']:.1f} "
            f"| {r['floor_ms']:.2f} | {r['overhead_vs_floor']:.2f}x | {r['server_cpu_ms_per_request']:.2f} "
            f"| {r['cpu_overhead']:.2f}x | {r['client_cpu_ms_per_request']:.2f} "
            f"| {r['load_avg']} |")
    if any("path" in r for r in results["runs"]):
        fitted = results["settings"].get("weights") == "fitted"
        lines += ["", "Top-k path: exact = the decoder over every repository; approximate = the model's "
                  "faiss inner-product index of the kind recvae.ann's `auto` picks for the catalog "
                  "(`index` column), built in the benchmark, stored and registered as recvae_model does. "
                  + ("Decoder rows drawn from the Gaussian of a RecVAE trained on github-stars-tiny "
                     "(ann_compare.py's `fitted`); recall@20 against exact on that model's held-out "
                     "users' codes." if fitted else
                     "Recall@20 against exact on 200 of the benchmark's users (50 random repositories "
                     "each, untrained weights).") + " RSS per serving process after the row.", "",
                  "| items | path | index | clients | req/s | p50 ms | p99 ms | errors | recall@20 "
                  "| index build s | index MiB | RSS MiB per worker | load avg |",
                  "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in results["runs"]:
            if "path" in r:
                lines.append(
                    f"| {r['items']:,} | {r['path']} | {r.get('index_kind', '-')} | {r['clients']} "
                    f"| {r['rps']:,.0f} | {r['p50_ms']:.2f} "
                    f"| {r['p99_ms']:.2f} | {r['errors']} | {r['recall@20']:.4f} "
                    f"| {r.get('index_build_s', '-')} | {r.get('index_mb', '-')} "
                    f"| {', '.join(str(x) for x in r['rss_mb'])} | {r['load_avg']} |")
    s = results.get("swap")
    if s:
        lines += ["", f"Swaps under load ({s['items']:,} items, 16 clients, {s['seconds']}s): "
                  f"{s['swaps_done']} models swapped in by the poller while serving; {s['requests']:,} "
                  f"requests, **{s['errors']} errors**, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
                  f"max {s['max_ms']} ms; {s['models_answering']} different models answered."]
    d = results.get("drain")
    if d:
        lines += ["", f"SIGTERM under load ({d['items']:,} items, {d['workers']} workers, {d['clients']} "
                  f"keep-alive clients, drain {d['drain_seconds']} s, load average {d['load_avg']}): "
                  f"**{d['in_flight_completed_200']}/{d['in_flight_at_signal']} requests in flight at the "
                  f"signal completed with 200**; {d['after_signal_200']}/{d['after_signal']} requests sent "
                  f"during the drain answered 200; {d['failed']} failed {d['failure_samples']}"
                  + (f" (sent {d['failed_sent_after_s'][0]}-{d['failed_sent_after_s'][1]} s after the "
                     f"signal)" if d.get("failed_sent_after_s") else "") + "; new "
                  f"connections refused from {d['first_refused_after_s']} s after the signal; the last "
                  f"answer at {d['last_answer_after_s']} s; the server exited with status "
                  f"{d['exit_status']} after {d['exited_after_s']} s."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--inference", nargs="+", default=["batched", "inline"],
                        choices=["coalesced", "batched", "inline"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured row (at most 60)")
    parser.add_argument("--paths", nargs="+", default=["exact"], choices=["exact", "approximate"],
                        help="top-k path of the server: exact, or the model's faiss index "
                             "(`auto`: built here, stored and registered as recvae_model does)")
    parser.add_argument("--weights", choices=("untrained", "fitted"), default="untrained",
                        help="decoder rows: the initialisation, or drawn from the Gaussian of a "
                             "RecVAE trained on github-stars-tiny (ann_compare.py's `fitted`; the "
                             "index's recall is then measured on that model's held-out users)")
    parser.add_argument("--dataset", type=Path, default=DATASET, help="for --weights fitted")
    parser.add_argument("--epochs", type=int, default=10, help="for --weights fitted")
    parser.add_argument("--cache", type=Path, help="for --weights fitted: ann_compare.py's .npz")
    parser.add_argument("--build-threads", type=int, default=1,
                        help="threads that build the approximate path's index")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="worker processes of the server (`batchrec serve --workers`), one row set each")
    parser.add_argument("--swaps", type=int, default=3,
                        help="models swapped in under load (0: no swap phase)")
    parser.add_argument("--drain", action="store_true",
                        help="also measure a SIGTERM under load: requests in flight completed / total")
    parser.add_argument("--drain-workers", type=int, default=2)
    parser.add_argument("--drain-seconds", type=float, default=2.0)
    parser.add_argument("--name", default="serving",
                        help="results file name under --out (default: %(default)s.md and .json)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator for the measured rows: wrk (if installed; apt-get install "
                             "wrk) or the asyncio client; auto = wrk when on PATH. The swap phase "
                             "always uses the asyncio client, which checks every answer's model id")
    parser.add_argument("--quick", action="store_true", help="tiny run, results not written")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.quick:
        args.items, args.threads, args.seconds, args.swaps = [2000], [1], 1.0, 1
    args.seconds = min(args.seconds, 60.0)
    if args.generator == "auto":
        args.generator = "wrk" if wrk_available() else "python"
    elif args.generator == "wrk" and not wrk_available():
        parser.error("wrk is not installed (apt-get install wrk), use --generator python")
    if max(args.clients) > 64:
        parser.error("at most 64 clients")
    results = run(args)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / f"{args.name}.md").write_text(markdown(results))
        print(f"wrote {args.out / args.name}.json and .md")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
