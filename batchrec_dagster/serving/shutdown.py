"""Graceful shutdown: uvicorn's server with a drain delay between SIGTERM and closing the listener.

On the first SIGTERM (or Ctrl-C) the worker starts draining: `/readyz` answers 503 at once (the
load balancer or Kubernetes stops sending new traffic), every response carries `Connection:
close`, and new connections are still accepted for `drain_seconds` (clients that have not yet
noticed are served, not refused). Then uvicorn's own shutdown runs: the listener closes (new
connections are refused), idle connections are closed, and requests in flight finish (at most
`timeout_graceful_shutdown` seconds) before the lifespan stops the poller and the inference thread.
A second signal skips the rest of the delay; a further Ctrl-C stops at once (uvicorn's force exit).
The process then exits with status 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from batchrec_dagster.serving.edge import ShutdownState

log = logging.getLogger("batchrec.serving")

GRACEFUL_TIMEOUT_S = 30  # the longest a request in flight may still take after the listener closes


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain_seconds: float, state: ShutdownState,
                 on_drain: Callable[[], None] | None = None):
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.state = state
        self.on_drain = on_drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn records the signal to re-raise it after shutdown (exit status -15); not here:
        # the shutdown is complete and orderly, so the process exits with 0
        if self.started and not self.state.draining and self.drain_seconds > 0:
            self.state.begin()
            if self.on_drain is not None:
                self.on_drain()
            log.info("signal %d: draining for %.1f s (readyz 503), then closing the listener",
                     sig, self.drain_seconds)
            timer = threading.Timer(self.drain_seconds, self._close_listener)
            timer.daemon = True
            timer.start()
            return
        if not self.state.draining:
            self.state.begin()
            if self.on_drain is not None:
                self.on_drain()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    def _close_listener(self) -> None:
        self.should_exit = True  # uvicorn's main loop notices within 0.1 s and shuts down
