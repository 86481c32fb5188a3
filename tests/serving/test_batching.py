"""The batching thread's merge rule (inference.BatchedInference._work): requests that queued up
during a pass wait briefly for the previous batch's clients, so two groups of clients taking
turns merge into one pass; requests that find the model idle never wait.

The forward pass is replaced by a recorder of batch sizes (`_run` overridden): what is under test
is how the worker forms batches, and the moment "requests arrive during a pass" cannot be caused
reliably with a real pass of a few milliseconds. The merge window is widened so that the test's
own thread scheduling cannot make it expire."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from batchrec_dagster.serving import inference
from batchrec_dagster.serving.inference import BatchedInference, _Job
from tests.serving.helpers import wait_for


class RecordingInference(BatchedInference):
    def __init__(self) -> None:
        super().__init__(max_batch=32)
        self.sizes: list[int] = []
        self.during_first_pass: Callable[[], None] = lambda: None

    def _run(self, jobs: list[_Job]) -> None:
        if not self.sizes:
            self.during_first_pass()
        self.sizes.append(len(jobs))  # after the callback: sizes == [n] means the pass is over


def job() -> _Job:
    return _Job(model=None, columns=np.zeros(0, dtype=np.int64), k=1, future=None, loop=None)  # type: ignore[arg-type]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingInference]:
    monkeypatch.setattr(inference, "MERGE_WAIT_FRACTION", 1e9)
    monkeypatch.setattr(inference, "MAX_MERGE_WAIT_S", 30.0)
    engine = RecordingInference()
    yield engine
    engine.stop()


def test_two_groups_taking_turns_merge_into_one_pass(engine: RecordingInference) -> None:
    def group_b_arrives() -> None:
        for _ in range(3):
            engine._queue.put(job())

    engine.during_first_pass = group_b_arrives
    for _ in range(4):  # group A
        engine._queue.put(job())
    engine.start()
    # pass A is over and group B has been taken from the queue: the worker now waits for A's clients
    wait_for(lambda: engine.sizes == [4] and engine._queue.empty(), message="group B drained")
    for _ in range(4):  # group A's clients come back with their next requests
        engine._queue.put(job())
    wait_for(lambda: engine.sizes == [4, 7], timeout_s=10, message="one merged pass of 7")
    assert engine.merged == 1


def test_requests_that_find_the_model_idle_do_not_wait(engine: RecordingInference) -> None:
    engine._queue.put(job())
    engine.start()
    wait_for(lambda: engine.sizes == [1], message="first pass")
    engine._queue.put(job())
    # the queue was empty after the first pass: this one goes at once, not after the (30 s) window
    wait_for(lambda: engine.sizes == [1, 1], timeout_s=10, message="second pass without waiting")
    assert engine.merged == 0
