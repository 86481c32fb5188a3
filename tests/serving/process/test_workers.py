"""`batchrec serve --workers 2` for real: two processes on one port, each with its own model and
poller, converging on a new champion; Prometheus metrics summed across them; a SIGTERM drains
and stops both. The rate-limit buckets shared by worker processes are checked across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from batchrec_dagster.localstack.processes import children, is_running
from batchrec_dagster.settings import PROJECT_ROOT
from tests.harness.serving import publish, wait_for
from tests.harness.serving_processes import ServeProcess, serve_env, store_for

POLL_SECONDS = 2.0


def test_two_workers_share_a_port_and_converge_on_a_new_champion(mongo_server_uri, mongo_db,
                                                                  tmp_path: Path) -> None:
    env = serve_env(mongo_server_uri, mongo_db.name, tmp_path / "home")
    store = store_for(env)
    first = publish(mongo_db, store, score=0.2, seed=1)
    with ServeProcess(env, "--workers", "2", "--poll-seconds", str(POLL_SECONDS), "--drain-seconds", "1",
                      "--log-level", "warning", log=tmp_path / "serve.log") as serve:
        serve.wait_ready()
        latest: dict[int, str] = {}  # worker pid -> the model it said it serves, last time we asked

        def ask() -> dict[int, str]:
            serve.check_running()
            body = serve.get("/model").json()  # a new connection: the kernel picks a worker
            if body["model"] is not None:
                latest[body["worker"]["pid"]] = body["model"]["id"]
            return latest

        wait_for(lambda: len(ask()) == 2 and set(latest.values()) == {str(first["_id"])}, 120,
                 "both workers serving the first model")
        workers = set(latest)
        assert children(serve.pid) == workers  # the supervisor's own children
        serve.workers |= workers

        # clients keep asking while the champion changes: every answer is whole, from one model
        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=serve.url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/recommendations", json={"repo_ids": [1000, 1003], "k": 5})
                    ok = r.status_code == 200 and len(r.json()["recommendations"]) == 5
                    answers.append((r.status_code, r.json()["model"]["id"] if ok else r.text))

        threads = [threading.Thread(target=client) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            second = publish(mongo_db, store, score=0.3, seed=2)
            published = time.monotonic()
            wait_for(lambda: set(ask().values()) == {str(second["_id"])} and set(latest) == workers,
                     60, "every worker serving the new model")
            converged = time.monotonic() - published
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        # the workers poll at the same wall-clock moments: one interval, plus loading, plus our polling
        assert converged < POLL_SECONDS + 10, converged
        assert answers and all(status == 200 for status, _ in answers), answers[:5]
        assert {model for _, model in answers} <= {str(first["_id"]), str(second["_id"])}

        # metrics are summed across the worker processes (prometheus-client multiprocess mode)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(serve.get("/metrics").text) for s in f.samples}
        assert samples[("batchrec_http_requests_total",
                        (("route", "/recommendations"), ("status", "200")))] == len(answers)
        assert samples[("batchrec_inference_batch_size_sum", ())] == len(answers)
        served = {(dict(labels)["pid"], dict(labels)["model_id"]): v for (name, labels), v in samples.items()
                  if name == "batchrec_served_model_info"}
        assert {pid for (pid, model), v in served.items() if model == str(second["_id"]) and v == 1} == {
            str(pid) for pid in workers}
        assert samples[("batchrec_model_swaps_total", ())] == 4  # two per worker

        # SIGTERM: both workers drain (readyz 503) and exit, then the supervisor, with status 0
        assert serve.terminate() == 0
    assert not any(is_running(pid) for pid in workers)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


TAKER = """
import sys, time
from batchrec_dagster.serving.api.access import TokenBuckets
buckets = TokenBuckets(1, rate=0.001, burst=50, path=sys.argv[1])
start = float(sys.argv[2])
while time.time() < start:  # both processes start taking at the same moment
    pass
print(sum(1 for _ in range(40) if buckets.take(0) == 0.0))
"""


def test_the_rate_limit_holds_across_processes(tmp_path: Path) -> None:
    """Two processes (as two workers) take from one key's bucket at once: 50 allowed in total, not 50
    each. (The server uses these buckets for every keyed request: test_access.py.)"""
    start = str(time.time() + 3.0)
    takers = [subprocess.Popen([sys.executable, "-c", TAKER, str(tmp_path / "buckets"), start],
                               stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT) for _ in range(2)]
    try:
        counts = [int(p.communicate(timeout=120)[0]) for p in takers]
    finally:
        for p in takers:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sum(counts) == 50, counts  # 80 tries in all; per-process buckets would allow 80


def test_more_workers_than_cpus_is_warned_about() -> None:
    from batchrec_dagster.serving.process.command import oversubscription_warning

    assert oversubscription_warning(2, 2) is None
    assert oversubscription_warning(1, 1) is None
    warning = oversubscription_warning(4, 2)
    assert warning is not None and "--workers 4 on 2 CPU(s)" in warning
