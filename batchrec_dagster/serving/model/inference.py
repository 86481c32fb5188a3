"""Running the model for requests: inline on the event loop, or micro-batched on one worker thread.

Micro-batching: requests that arrive while the model is busy are queued and answered together by
one forward pass. A batch of 16 users costs little more than one user (the decoder's weights are
read once per batch instead of once per user), so under concurrency latency stays near one
forward pass instead of growing with the queue. Torch releases the GIL during the heavy
kernels (the scripted pass of `scoring.py` releases it once for the whole pass), so the event
loop keeps parsing requests while the worker computes. With a single client there is no
waiting: a request that finds the model idle runs at once. Under concurrency a batch waits
briefly for the previous batch's clients to come back (see `BatchedInference`), so that closed-
loop clients share one pass instead of splitting into a pass for the first few and a late one
for the rest.

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

from batchrec_dagster.serving.model.loaded import LoadedModel, recommend_batch

log = logging.getLogger("batchrec.serving")

# how long a batch may wait for the previous batch's clients: a fraction of that batch's pass, at
# most MAX_MERGE_WAIT_S (see BatchedInference). A whole pass: 16 closed-loop clients come back
# over about one pass's time while the event loop answers and reads them (with 0.3 of a pass,
# batches averaged 14.4 of 16 at 5,000 items and 16 connections; with a whole pass, 16.0).
MERGE_WAIT_FRACTION = 1.0
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
    """Requests collected on the event loop, handed to one worker thread a batch at a time.

    The batch is formed on the event loop thread, where requests arrive, and crosses to the
    worker thread in one hand-over; the answers come back in one call. Two wake-ups per pass,
    whatever its size: a worker woken by every request would take the interpreter lock from the
    event loop once per request while the batch forms.

    When to hand over: at once while nothing is known (the first request) or when as many
    requests wait as the previous batch had, plus those that queued up during its pass; else
    when a short wait (`MERGE_WAIT_FRACTION` of the last pass, at most `MAX_MERGE_WAIT_S`) ends.
    Closed-loop clients come back one by one as the event loop answers the previous batch and
    reads their next requests; handing over at the first of them would run a pass for a few and
    leave the rest a whole pass behind (the p99). A lone client after a batch of one never waits.
    """

    mode = "batched"

    def __init__(self, max_batch: int = 32):
        super().__init__()
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # event loop side (only touched on self._loop's thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[_Job] = []
        self._busy = False         # a batch is with the worker thread
        self._target = 0           # hand over once this many requests wait
        self._wait_s = 0.0         # ... or this long after the first of them arrived
        self._timer: asyncio.TimerHandle | None = None
        self._held_from = 0        # requests waiting when the current wait began
        self.merged = 0            # batches that waited for and got more requests

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="inference", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
            self._thread = None
        pending, self._pending = self._pending, []
        for job in pending:  # none after an orderly shutdown (requests finish first)
            job.loop.call_soon_threadsafe(_resolve, job.future, None, RuntimeError("inference stopped"))

    async def recommend(self, model: LoadedModel, columns: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray]:
        if self._thread is None:
            raise RuntimeError("inference worker is not running")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._busy or self._pending:
                raise RuntimeError("one event loop at a time per BatchedInference")
            self._loop = loop  # a new loop (a restarted server, a test client) once idle
        future = loop.create_future()
        self._pending.append(_Job(model, columns, k, future, loop))
        self._kick()
        return await future

    # -- event loop side

    def _kick(self) -> None:
        if self._busy or not self._pending:
            return
        if len(self._pending) >= self._target or len(self._pending) >= self.max_batch:
            self._hand_over()
        elif self._timer is None:
            self._held_from = len(self._pending)
            assert self._loop is not None
            self._timer = self._loop.call_later(self._wait_s, self._waited)

    def _waited(self) -> None:
        self._timer = None
        if not self._busy and self._pending:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            if len(self._pending) > self._held_from:
                self.merged += 1
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        self._busy = True
        self._queue.put(batch)

    def _done(self, items: list[tuple[asyncio.Future, object, BaseException | None]],
              size: int, seconds: float) -> None:
        _resolve_all(items)
        self._busy = False
        # requests that queued up during the pass are another group of clients: wait for the
        # batch just answered to come back too, so that the groups merge into one pass
        self._target = min(self.max_batch, size + len(self._pending))
        self._wait_s = min(MERGE_WAIT_FRACTION * seconds, MAX_MERGE_WAIT_S)
        self._kick()

    # -- worker thread

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            started = time.perf_counter()
            try:
                answers = self._run(batch)
            except Exception as exc:  # a bug outside the pass: answer the batch, keep serving
                log.exception("inference worker failed for a batch of %d", len(batch))
                answers = [(job.future, None, exc) for job in batch]
            seconds = time.perf_counter() - started
            batch[0].loop.call_soon_threadsafe(self._done, answers, len(batch), seconds)

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "merged_batches": self.merged}

    def _run(self, jobs: list[_Job]) -> list[tuple[asyncio.Future, object, BaseException | None]]:
        groups: dict[int, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(id(job.model), []).append(job)
        answers: list[tuple[asyncio.Future, object, BaseException | None]] = []
        for group in groups.values():
            k = max(job.k for job in group)
            try:
                indices, scores = recommend_batch(group[0].model, [job.columns for job in group], k)
            except Exception as exc:  # answer every waiting request; the worker keeps running
                log.exception("inference failed for a batch of %d", len(group))
                answers.extend((job.future, None, exc) for job in group)
                continue
            self._count(len(group))
            for row, job in enumerate(group):
                answers.append((job.future, (indices[row, :job.k], scores[row, :job.k]), None))
        return answers


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
