"""`batchrec serve --workers N`: N processes on one port, each with its own model and poller.

The supervisor (this process) binds N listening sockets to the same address with SO_REUSEPORT,
so the kernel spreads new connections over the workers, and starts one worker per socket
(`python -m batchrec_dagster.serving.process.worker`), which inherits its socket. The supervisor keeps
its copies: a worker that dies is restarted on the same socket, and connections that arrived
meanwhile wait in its queue instead of being refused. Workers poll the registry at the same
wall-clock moments (model_manager.py), so they converge on a new model within one poll interval.

Signals: the first SIGTERM or Ctrl-C is passed on to every worker, which drains (shutdown.py);
the supervisor closes its copies of the sockets at once, so that the listeners really close when
the workers close theirs. A second signal makes the workers skip the rest of the drain; a third
kills them. The supervisor exits when every worker has exited, 0 after an orderly stop.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from batchrec_dagster.localstack.processes import handling
from batchrec_dagster.serving.api.metrics import mark_worker_gone
from batchrec_dagster.serving.process.runtime import ServeOptions

log = logging.getLogger("batchrec.serving")

QUICK_EXIT_S = 10.0   # a worker that exits sooner than this after its start failed to start
MAX_QUICK_EXITS = 3   # in a row: stop everything rather than restart forever


@dataclass
class _Worker:
    process: subprocess.Popen
    started: float


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening on one address (SO_REUSEPORT); port 0 picks one free port."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = sock.getsockname()  # the port the first one got, for the others
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Supervisor:
    def __init__(self, options: ServeOptions, sockets: list[socket.socket]):
        self.options = options
        self.sockets = sockets
        self.workers: dict[int, _Worker] = {}
        self.signals: list[int] = []
        self.failed = False
        self._quick_exits = 0

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        # signals (and SIGCHLD, a worker exiting) wake the loop's select() through this pipe
        previous_fd = signal.set_wakeup_fd(wake_w)
        handlers = {signal.SIGTERM: self._on_signal, signal.SIGINT: self._on_signal,
                    signal.SIGCHLD: lambda sig, frame: None}
        try:
            with handling(handlers):
                for index in range(len(self.sockets)):
                    self._spawn(index)
                self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(previous_fd)
            for worker in self.workers.values():  # only after an error in the loop itself
                worker.process.kill()
                worker.process.wait()
            self._close_sockets()
            os.close(wake_r)
            os.close(wake_w)
        return 1 if self.failed else 0

    def _on_signal(self, sig: int, frame: object) -> None:
        self.signals.append(sig)  # acted on by the loop, outside the handler

    def _loop(self, wake_r: int) -> None:
        acted = 0
        while self.workers or not self.signals:
            select.select([wake_r], [], [], 1.0)
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            while acted < len(self.signals):
                acted += 1
                self._escalate(acted)
            self._reap()

    def _escalate(self, stage: int) -> None:
        if stage == 1:
            log.info("stopping %d worker(s): draining for %.1f s", len(self.workers),
                     self.options.drain_seconds)
            self._close_sockets()
        how = signal.SIGTERM if stage <= 2 else signal.SIGKILL
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(how)

    def _reap(self) -> None:
        for index, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is None:
                continue
            del self.workers[index]
            mark_worker_gone(os.path.join(self.options.state_dir, "metrics"), worker.process.pid)
            if self.signals:
                continue  # stopping: exits are expected
            log.error("worker %d (pid %d) exited with status %s", index, worker.process.pid, code)
            quick = time.monotonic() - worker.started < QUICK_EXIT_S
            self._quick_exits = self._quick_exits + 1 if quick else 0
            if self._quick_exits >= MAX_QUICK_EXITS:
                log.error("workers keep exiting right after their start: stopping (see the log above)")
                self.failed = True
                self.signals.append(signal.SIGTERM)
                continue
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        fd = self.sockets[index].fileno()
        command = [sys.executable, "-m", "batchrec_dagster.serving.process.worker", "--options",
                   self.options.to_json(), "--index", str(index), "--fd", str(fd)]
        # own session: a Ctrl-C in the terminal reaches the supervisor only, which passes it on
        process = subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        self.workers[index] = _Worker(process, time.monotonic())
        log.info("worker %d started (pid %d)", index, process.pid)

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()


def run_workers(options: ServeOptions) -> int:
    """Serve with `options.workers` processes until a signal stops them; the exit status."""
    sockets = listening_sockets(options.host, options.port, options.workers)
    return Supervisor(options, sockets).run()
