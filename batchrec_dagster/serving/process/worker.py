"""One worker process of `batchrec serve --workers N` (started by workers.py, not by hand): serves
on the listening socket it inherited, with its own model and poller."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading

from batchrec_dagster.serving.process.runtime import ServeOptions, exit_now, serve

log = logging.getLogger("batchrec.serving")


def _watch_parent(parent: int) -> None:
    """Drain and stop if the supervisor dies without stopping us (kill -9): no orphan workers."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                log.error("supervisor %d is gone: shutting down", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batchrec-serve-worker")
    parser.add_argument("--options", required=True, help="ServeOptions as JSON")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    args = parser.parse_args(argv)
    options = ServeOptions.from_json(args.options)
    logging.basicConfig(level=options.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s[w{args.index}]: %(message)s")
    _watch_parent(os.getppid())
    serve(options, args.index, sockets=[socket.socket(fileno=args.fd)])
    exit_now(0)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
