"""Prometheus metrics of the server (`GET /metrics`), through prometheus-client.

With several worker processes (`batchrec serve --workers N`) prometheus-client runs in its
multiprocess mode: each process writes its values to memory-mapped files in one folder
(PROMETHEUS_MULTIPROC_DIR, a fresh folder per `batchrec serve`, set before prometheus_client is
imported), and whichever worker answers a scrape reads all of them. Counters and histograms are
summed over the workers; the per-worker gauges (served model, readiness, registry reachability)
keep one series per process (`pid` label) and disappear when a worker exits.

Without a folder (tests, an app built in-process) each `ServingMetrics` has its own registry.
Series are listed in docs/serving.md (Metrics).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client import generate_latest as _generate
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from batchrec_dagster.serving.model.loaded import LoadedModel
    from batchrec_dagster.serving.model.manager import ModelManager, RefreshResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
# request latency: the API answers in about 1-20 ms; the tail up to seconds shows trouble
LATENCY_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 64)


class ServingMetrics:
    """The server's metrics; `multiprocess_dir` switches to prometheus-client's multiprocess mode."""

    def __init__(self, multiprocess_dir: str | Path | None = None):
        self.multiprocess_dir = str(multiprocess_dir) if multiprocess_dir is not None else None
        if self.multiprocess_dir is not None and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError("PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported")
        # multiprocess: values live in the folder's files, collected at scrape time; no registry
        self.registry = None if self.multiprocess_dir else CollectorRegistry()
        r = self.registry
        per_worker = {"multiprocess_mode": "liveall", "registry": r}
        self.requests = Counter("batchrec_http_requests", "HTTP requests answered, by route and status.",
                                ["route", "status"], registry=r)
        self.latency = Histogram("batchrec_http_request_duration_seconds",
                                 "Time from request start to the end of the response, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("batchrec_inference_batch_size",
                                    "Requests answered by one forward pass (micro-batching).",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.model_info = Gauge("batchrec_served_model_info",
                                "1 for the model this worker serves (0 for models it served before).",
                                ["model_id", "run_id", "partition_key"], **per_worker)
        self.model_score = Gauge("batchrec_served_model_score", "Registry score of the served model.",
                                 **per_worker)
        self.model_data_end = Gauge("batchrec_served_model_data_end_timestamp_seconds",
                                    "End of the served model's training data (unix time): its age is "
                                    "time() minus this.", **per_worker)
        self.model_age = Gauge("batchrec_served_model_age_seconds",
                               "Age of the served model's training data, updated at each poll.",
                               **per_worker)
        self.ready = Gauge("batchrec_ready", "1 while this worker has a model and is not shutting down.",
                           **per_worker)
        self.registry_up = Gauge("batchrec_registry_up", "1 if this worker's last poll reached the registry.",
                                 **per_worker)
        self.swaps = Counter("batchrec_model_swaps", "Models swapped in.", registry=r)
        self.swap_failures = Counter("batchrec_model_swap_failures",
                                     "Candidate models that failed to download, verify, load or warm up.",
                                     registry=r)
        self.poll_errors = Counter("batchrec_registry_poll_errors", "Registry polls that failed.",
                                   registry=r)
        self.refused = Counter("batchrec_http_refused", "Requests refused before the route ran.",
                               ["reason"], registry=r)
        self.draining = False  # set by the shutdown: a draining worker is not ready
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._seen = {"swaps": 0, "failed_loads": 0, "poll_errors": 0}
        self._labels: tuple[str, str, str] | None = None

    # -- per request and per batch (hot path: children are looked up once per route and status)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        children = self._children.get((route, status))
        if children is None:
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def observe_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    # -- per poll

    def observe_refresh(self, manager: ModelManager, result: RefreshResult | None = None) -> None:
        """Counters from the manager's totals (deltas since the last call) and the served model."""
        for name, counter in (("swaps", self.swaps), ("failed_loads", self.swap_failures),
                              ("poll_errors", self.poll_errors)):
            total = getattr(manager, name)
            if total > self._seen[name]:
                counter.inc(total - self._seen[name])
                self._seen[name] = total
        if manager.registry_reachable is not None:
            self.registry_up.set(1 if manager.registry_reachable else 0)
        self.ready.set(1 if manager.current is not None and not self.draining else 0)
        self.observe_model(manager.current, manager.now().timestamp())

    def observe_model(self, model: LoadedModel | None, now: float) -> None:
        if model is None:
            self._forget_model()  # withdrawn (banned): no series may still name it as served
            return
        summary = model.summary
        labels = (str(summary.get("id")), str(summary.get("run_id")), str(summary.get("partition_key")))
        if labels != self._labels:
            self._forget_model()
            self.model_info.labels(*labels).set(1)
            self._labels = labels
        score = summary.get("score")
        self.model_score.set(float(score) if isinstance(score, int | float) else float("nan"))
        if model.data_end is not None:
            self.model_data_end.set(model.data_end.timestamp())
            self.model_age.set(now - model.data_end.timestamp())

    def _forget_model(self) -> None:
        if self._labels is None:
            return
        if self.multiprocess_dir:  # files cannot forget a series: mark it as no longer served
            self.model_info.labels(*self._labels).set(0)
        else:
            self.model_info.remove(*self._labels)
        self._labels = None

    def begin_draining(self) -> None:
        self.draining = True
        self.ready.set(0)

    # -- exposition

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            assert self.registry is not None
            return _generate(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return _generate(registry)


def mark_worker_gone(multiprocess_dir: str | Path, pid: int) -> None:
    """Drop a finished worker's per-worker gauges (its counters stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(multiprocess_dir))
