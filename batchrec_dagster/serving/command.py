"""`batchrec serve`: the recommendation API for the deployment in the environment.

local: registry and users in the embedded MongoDB (or MONGODB_URI), artifacts under
BATCHREC_HOME/storage/models. prod: MONGODB_URI, artifacts in GCS_BUCKET under
GCS_PREFIX/models (Application Default Credentials), the same store the pipeline writes to.
One uvicorn process: the model lives in its memory and is swapped there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

from batchrec_dagster.mongo import connect, server_uri
from batchrec_dagster.settings import get_settings
from batchrec_dagster.storage import blob_store_for

log = logging.getLogger("batchrec.serving")

SWITCH_INTERVAL_S = 0.001


def add_serve_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve", help="serve recommendations over HTTP with the best registered model",
        description=("Serve the best model of the registry over HTTP (FastAPI); poll the registry "
                     "and swap in a better model without downtime. Docs at /docs."))
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--poll-seconds", type=float, default=60.0,
                        help="how often to ask the registry for a better model (default: %(default)s)")
    parser.add_argument("--max-age-hours", type=float, default=None,
                        help="models trained on data older than this are not served "
                             "(default: BATCHREC_MODEL_MAX_AGE_HOURS, 24)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="intra-op threads for inference (default: %(default)s; see docs/serving.md)")
    parser.add_argument("--inference", choices=("coalesced", "batched", "inline"), default="batched",
                        help="batched: micro-batch concurrent requests on an inference thread; "
                             "coalesced: micro-batch on the event loop; inline: one request per "
                             "forward pass (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="largest micro-batch (default: %(default)s)")
    parser.add_argument("--show", metavar="LOGIN",
                        help="once ready, print the recommendations for this user, then keep serving")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=run_serve, handler=run_serve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from batchrec_dagster.serving.app import create_app
    from batchrec_dagster.serving.model_manager import ModelManager

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if args.max_age_hours is None:
        args.max_age_hours = settings.model_max_age_hours
    if args.poll_seconds <= 0 or args.max_age_hours <= 0 or args.torch_threads < 1:
        raise SystemExit("--poll-seconds, --max-age-hours and --torch-threads must be positive")
    torch.set_num_threads(args.torch_threads)
    # the inference thread waits up to one switch interval for the interpreter lock whenever the
    # event loop holds it (default 5 ms); 1 ms bounds that wait at a negligible cost in switches
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # a login look-up fails within 2 s when MongoDB is down (503), instead of pymongo's 10 s+
    db = connect(server_uri(settings), serverSelectionTimeoutMS=2000,
                 connectTimeoutMS=2000)[settings.mongodb_database]
    store = blob_store_for(settings)
    manager = ModelManager(db, store, max_age=timedelta(hours=args.max_age_hours),
                           poll_seconds=args.poll_seconds)
    app = create_app(manager, db, inference=args.inference, max_batch=args.max_batch)
    config = uvicorn.Config(app, host=args.host, port=args.port, workers=1, access_log=False,
                            log_level=args.log_level, loop="auto", http="auto",
                            proxy_headers=False)  # no client address is used: skip the X-Forwarded-* layer
    server = uvicorn.Server(config)
    print(f"batchrec serve: {settings.deployment} deployment, models from {store.location}; "
          f"http://{args.host}:{args.port}/docs", flush=True)
    if args.show:
        threading.Thread(target=_show, args=(server, args), daemon=True).start()
    server.run()
    return 0


def _show(server: Any, args: argparse.Namespace, timeout_s: float = 120.0) -> None:
    """Wait for readiness, then print one user's recommendations the way a client gets them."""
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{host}:{args.port}"
    deadline = time.monotonic() + timeout_s
    reason = "server did not start"
    while time.monotonic() < deadline and not server.should_exit:
        if server.started:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except urllib.error.HTTPError as exc:
                reason = json.loads(exc.read() or b"{}").get("detail", str(exc))
            except OSError as exc:
                reason = str(exc)
        time.sleep(0.2)  # a human-facing wait for readiness, not test synchronisation
    else:
        print(f"--show: not ready after {timeout_s:.0f}s: {reason} (run `make demo` first?)", flush=True)
        return
    url = f"{base}/users/{urllib.request.quote(args.show)}/recommendations?k=10"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        print(f"GET {url} -> {exc.code}: {exc.read().decode(errors='replace')}", flush=True)
        return
    model = body["model"]
    lines = [f"GET {url}", f"model {model['id']} (run {model['run_id']}, partition {model['partition_key']}, "
             f"score {model['score']:.4f}); popularity fallback: {body['popularity_fallback']}"]
    lines += [f"{rank:>3}. {rec['name'] or rec['repo_id']}  ({rec['score']:.3f})"
              for rank, rec in enumerate(body["recommendations"], 1)]
    lines.append(f"server keeps running at {base} (Ctrl-C to stop); API docs at {base}/docs")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m batchrec_dagster.serving.command`), same options as `batchrec serve`."""
    parser = argparse.ArgumentParser(prog="batchrec")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_command(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
