"""Running the model for requests: inline on the event loop, or micro-batched on one worker thread.

Micro-batching: requests that arrive while the model is busy are queued and answered together by
one forward pass. A batch of 16 users costs little more than one user (the decoder's weights are
read once per batch instead of once per user), so under concurrency latency stays near one
forward pass instead of growing with the queue. Torch releases the GIL during the heavy
kernels (the scripted pass of `scoring.py` releases it once for the whole pass), so the event
loop keeps parsing requests while the worker computes. With a single client there is no
waiting: a request that finds the model idle runs at once. Requests that queued up during a
pass wait briefly for the previous batch's clients (see `BatchedInference._work`), so that
clients taking turns in two groups merge into one pass.

Each job carries the `LoadedModel` its request read, and a batch only mixes jobs of the same
model: a request in flight during a swap finishes on the model it started with.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from batchrec_dagster.serving.loaded_model import LoadedModel, recommend_batch

log = logging.getLogger("batchrec.serving")

# how long the batching thread may wait to merge two groups of clients into one pass (see _work)
MERGE_WAIT_FRACTION = 0.3
MAX_MERGE_WAIT_S = 0.003


class Inference(Protocol):
    async def recommend(self, model: LoadedModel, columns: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class _Counted:
    mode = ""

    def __init__(self) -> None:
        self.batches = 0
        self.jobs = 0
        self.on_batch: Callable[[int], None] | None = None  # called with each batch's size (metrics)

    def _count(self, size: int) -> None:
        self.batches += 1
        self.jobs += size
        if self.on_batch is not None:
            self.on_batch(size)

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode, "batches": self.batches, "requests": self.jobs,
                "mean_batch": round(self.jobs / self.batches, 2) if self.batches else None}


class InlineInference(_Counted):
    """The forward pass on the event loop thread: no hand-off, but requests run one at a time."""

    mode = "inline"

    async def recommend(self, model: LoadedModel, columns: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray]:
        indices, scores = recommend_batch(model, [columns], k)
        self._count(1)
        return indices[0], scores[0]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class _Job:
    model: LoadedModel
    columns: np.ndarray
    k: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _resolve(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class BatchedInference(_Counted):
    """One worker thread draining a queue into batches of at most `max_batch` users."""

    mode = "batched"

    def __init__(self, max_batch: int = 32):
        super().__init__()
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.merged = 0  # batches that waited for and got more requests (see _work)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="inference", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
            self._thread = None

    async def recommend(self, model: LoadedModel, columns: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray]:
        if self._thread is None:
            raise RuntimeError("inference worker is not running")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(model, columns, k, future, loop))
        return await future

    def _work(self) -> None:
        last_size = 0        # requests in the previous batch
        last_seconds = 0.0   # how long its pass took
        jobs: list[_Job] = []
        stopping = False
        while True:
            if jobs:
                # These requests queued up while the previous pass ran: the clients are split into
                # two groups taking turns (one waits while the other's pass runs), and each pass
                # reads all the weights for half of the users. The previous batch's clients come
                # back a moment after their answers: waiting a little for them (at most a fraction
                # of a pass) merges the groups into one pass. When requests arrive one at a time
                # or in one group, the queue is empty after a pass and nothing waits.
                queued = len(jobs)
                target = min(self.max_batch, queued + last_size)
                deadline = time.perf_counter() + min(MERGE_WAIT_FRACTION * last_seconds, MAX_MERGE_WAIT_S)
                while len(jobs) < target and not stopping:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                    else:
                        jobs.append(nxt)
                        stopping = self._drain(jobs)
                if len(jobs) > queued:
                    self.merged += 1
            else:
                job = self._queue.get()
                if job is None:
                    return
                jobs = [job]
                stopping = self._drain(jobs)
            started = time.perf_counter()
            self._run(jobs)
            last_seconds = time.perf_counter() - started
            last_size = len(jobs)
            jobs = []
            if stopping:
                return
            stopping = self._drain(jobs)  # what arrived during the pass
            if stopping:
                if jobs:
                    self._run(jobs)
                return

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "merged_batches": self.merged}

    def _drain(self, jobs: list[_Job]) -> bool:
        """Move queued jobs into `jobs` (up to max_batch) without waiting; True if told to stop."""
        while len(jobs) < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is None:
                return True
            jobs.append(nxt)
        return False

    def _run(self, jobs: list[_Job]) -> None:
        groups: dict[int, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(id(job.model), []).append(job)
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, object, BaseException | None]]]
        answers = {}
        for group in groups.values():
            k = max(job.k for job in group)
            try:
                indices, scores = recommend_batch(group[0].model, [job.columns for job in group], k)
            except Exception as exc:  # answer every waiting request; the worker keeps running
                log.exception("inference failed for a batch of %d", len(group))
                for job in group:
                    answers.setdefault(job.loop, []).append((job.future, None, exc))
                continue
            self._count(len(group))
            for row, job in enumerate(group):
                result = (indices[row, :job.k], scores[row, :job.k])
                answers.setdefault(job.loop, []).append((job.future, result, None))
        # one wake-up of the event loop per batch, not one per request
        for loop, items in answers.items():
            loop.call_soon_threadsafe(_resolve_all, items)


def _resolve_all(items: list[tuple[asyncio.Future, object, BaseException | None]]) -> None:
    for future, result, error in items:
        _resolve(future, result, error)


class CoalescedInference(_Counted):
    """Micro-batching on the event loop thread: requests that reach the model in the same loop
    iteration share one forward pass. No hand-off between threads, so no GIL contention."""

    mode = "coalesced"

    def __init__(self, max_batch: int = 32):
        super().__init__()
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self._pending: list[tuple[LoadedModel, np.ndarray, int, asyncio.Future]] = []
        self._scheduled = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    async def recommend(self, model: LoadedModel, columns: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((model, columns, k, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        groups: dict[int, list[tuple[LoadedModel, np.ndarray, int, asyncio.Future]]] = {}
        for job in pending:
            groups.setdefault(id(job[0]), []).append(job)
        for group in groups.values():
            for start in range(0, len(group), self.max_batch):
                chunk = group[start:start + self.max_batch]
                k = max(job[2] for job in chunk)
                try:
                    indices, scores = recommend_batch(chunk[0][0], [job[1] for job in chunk], k)
                except Exception as exc:
                    log.exception("inference failed for a batch of %d", len(chunk))
                    for job in chunk:
                        _resolve(job[3], None, exc)
                    continue
                self._count(len(chunk))
                for row, job in enumerate(chunk):
                    _resolve(job[3], (indices[row, :job[2]], scores[row, :job[2]]), None)


INFERENCE_MODES = ("coalesced", "batched", "inline")


def make_inference(mode: str, max_batch: int = 32) -> Inference:
    if mode == "batched":
        return BatchedInference(max_batch)
    if mode == "coalesced":
        return CoalescedInference(max_batch)
    if mode == "inline":
        return InlineInference()
    raise ValueError(f"inference mode must be one of {', '.join(INFERENCE_MODES)}, not {mode!r}")
