"""Graceful shutdown: uvicorn's server with a drain delay between SIGTERM and closing the listener.

On the first SIGTERM (or Ctrl-C) the worker starts draining: `/readyz` answers 503 at once (the
load balancer or Kubernetes stops sending new traffic), every response carries `Connection:
close`, and new connections are still accepted for `drain_seconds` (clients that have not yet
noticed are served, not refused). Then the listener closes (new connections are refused), and
connections accepted just before get a moment (`ACCEPTED_GRACE_S`) to deliver their request, which
uvicorn's own shutdown would otherwise drop as idle. uvicorn's shutdown follows: idle connections
are closed and requests in flight finish (at most `GRACEFUL_TIMEOUT_S`) before the lifespan stops
the poller and the inference thread. A second signal skips the rest of the delay; a further
Ctrl-C stops at once (uvicorn's force exit). The process then exits with status 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import FrameType

import uvicorn

from batchrec_dagster.serving.http.edge import ShutdownState

log = logging.getLogger("batchrec.serving")

GRACEFUL_TIMEOUT_S = 30   # the longest a request in flight may still take after the listener closes
ACCEPTED_GRACE_S = 0.5    # between closing the listener and closing connections with no request yet


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, drain_seconds: float, state: ShutdownState,
                 on_drain: Callable[[], None] | None = None):
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self.state = state
        self.on_drain = on_drain
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        await super().main_loop()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn records the signal to re-raise it after its shutdown (exit status -15); not
        # here: the shutdown is orderly and complete, so the process exits with status 0
        first = not self.state.draining
        if first:
            self.state.begin()
            if self.on_drain is not None:
                self.on_drain()
        loop = self._loop
        if first and loop is not None and self.started:
            log.info("signal %d: draining for %.1f s (readyz 503), then closing the listener",
                     sig, self.drain_seconds)
            # signal handlers run between the loop's steps: hand the schedule to the loop itself
            loop.call_soon_threadsafe(loop.call_later, self.drain_seconds, self._stop_listening)
            return
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    def _stop_listening(self) -> None:
        for server in getattr(self, "servers", []):
            server.close()  # no new connections from here on
        assert self._loop is not None
        self._loop.call_later(ACCEPTED_GRACE_S, self._exit)

    def _exit(self) -> None:
        self.should_exit = True  # uvicorn's main loop notices within 0.1 s and shuts down
