"""`batchrec serve`: the recommendation API for the deployment in the environment.

local: registry and users in the embedded MongoDB (or MONGODB_URI), artifacts under
BATCHREC_HOME/storage/models. prod: MONGODB_URI, artifacts in GCS_BUCKET under
GCS_PREFIX/models (Application Default Credentials), the same store the pipeline writes to.
One process by default; `--workers N` runs N worker processes on the port (workers.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from batchrec_dagster.registry.defaults import MAX_MODEL_AGE_HOURS
from batchrec_dagster.serving.process.runtime import ServeOptions, exit_now
from batchrec_dagster.settings import Settings, get_settings, override_for_process

log = logging.getLogger("batchrec.serving")

MAX_WORKERS = 64


def add_serve_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve", help="serve recommendations over HTTP with the best registered model",
        description=("Serve the best model of the registry over HTTP (FastAPI); poll the registry "
                     "and swap in a better model without downtime. Docs at /docs, a page at /, "
                     "Prometheus metrics at /metrics (docs/serving.md)."))
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: %(default)s); other than loopback only "
                             "with BATCHREC_API_KEYS set or --allow-without-keys")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes on the port, each with its own model and poller "
                             "(default: %(default)s)")
    parser.add_argument("--allow-without-keys", action="store_true",
                        help="listen on a non-loopback interface without API keys (only when something "
                             "in front of the server controls who reaches it)")
    parser.add_argument("--poll-seconds", type=float, default=60.0,
                        help="how often to ask the registry for a better model (default: %(default)s)")
    parser.add_argument("--max-age-hours", type=float, default=None,
                        help="models trained on data older than this are not served "
                             f"(default: BATCHREC_MODEL_MAX_AGE_HOURS, {MAX_MODEL_AGE_HOURS:g})")
    parser.add_argument("--drain-seconds", type=float, default=None,
                        help="after SIGTERM, keep accepting connections this long while /readyz says "
                             "503 (default: BATCHREC_DRAIN_SECONDS, 5)")
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
    parser.add_argument("--new-api-key", metavar="NAME",
                        help="print a new random API key and its BATCHREC_API_KEYS entry, then exit")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="uvicorn's and the server's log level (default: info)")
    parser.set_defaults(func=run_serve, handler=run_serve)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    from batchrec_dagster.serving.api.access import check_bind, new_api_key

    if args.new_api_key:
        key, entry = new_api_key(args.new_api_key)
        print(f"API key (give it to the client; it is not stored anywhere): {key}\n"
              f"add to BATCHREC_API_KEYS (comma-separated): {entry}")
        return 0
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    max_age = args.max_age_hours if args.max_age_hours is not None else settings.model_max_age_hours
    drain = args.drain_seconds if args.drain_seconds is not None else settings.drain_seconds
    if args.poll_seconds <= 0 or max_age <= 0 or args.torch_threads < 1 or drain < 0:
        raise SystemExit("--poll-seconds, --max-age-hours and --torch-threads must be positive, "
                         "--drain-seconds not negative")
    if not 1 <= args.workers <= MAX_WORKERS:
        raise SystemExit(f"--workers must be between 1 and {MAX_WORKERS}")
    warning = oversubscription_warning(args.workers, len(os.sched_getaffinity(0)))
    if warning:
        print(f"batchrec serve: warning: {warning}", file=sys.stderr, flush=True)
    refusal = check_bind(args.host, bool(settings.api_key_hashes), args.allow_without_keys)
    if refusal:
        print(f"batchrec serve: {refusal}", file=sys.stderr)
        return 2
    # one folder per run for what the workers share: prometheus-client's multiprocess files (it
    # reads the folder from PROMETHEUS_MULTIPROC_DIR, which must be set before it is imported)
    # and the rate-limit buckets
    state_dir = Path(tempfile.mkdtemp(prefix="batchrec-serve-"))
    (state_dir / "metrics").mkdir()
    override_for_process(PROMETHEUS_MULTIPROC_DIR=str(state_dir / "metrics"))
    options = ServeOptions(host=args.host, port=args.port, poll_seconds=args.poll_seconds,
                           max_age_hours=max_age, torch_threads=args.torch_threads,
                           inference=args.inference, max_batch=args.max_batch, log_level=args.log_level,
                           drain_seconds=drain, workers=args.workers, state_dir=str(state_dir))
    try:
        code = _serve(options, settings, args.show)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    exit_now(code)
    return code  # not reached


def oversubscription_warning(workers: int, cpus: int) -> str | None:
    """Why more workers than CPUs hurts, or None. Each worker micro-batches only the connections
    the kernel gave it and keeps about 1-1.5 cores busy under load: past one worker per CPU, passes
    get smaller, CPU per request grows and the workers wait for cores (on 2 CPUs, 4 workers had
    several times the p99 of 1; docs/serving.md, Workers)."""
    if workers <= cpus:
        return None
    return (f"--workers {workers} on {cpus} CPU(s): more workers than CPUs makes smaller batches "
            f"and waits for a core, so throughput falls and p99 grows (docs/serving.md, Workers)")


def _serve(options: ServeOptions, settings: Settings, show: str | None) -> int:
    from batchrec_dagster.deployments import blob_store_for, server_uri
    from batchrec_dagster.serving.process.runtime import serve

    server_uri(settings)  # the embedded MongoDB (local) is started once here, not by N workers at once
    keys = len(settings.api_key_hashes)
    store = blob_store_for(settings).location
    print(f"batchrec serve: {settings.deployment} deployment, models from {store}; "
          f"{options.workers} worker(s); API keys: {keys or 'none (loopback only)'}; "
          f"http://{options.host}:{options.port}/ (page), /docs, /metrics", flush=True)
    if show:
        threading.Thread(target=_show, args=(options, show), daemon=True).start()
    if options.workers == 1:
        serve(options)
        return 0
    from batchrec_dagster.serving.process.supervisor import run_workers

    return run_workers(options)


def _show(options: ServeOptions, login: str, timeout_s: float = 120.0) -> None:
    """Wait for readiness, then print one user's recommendations the way a client gets them."""
    host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    base = f"http://{host}:{options.port}"
    deadline = time.monotonic() + timeout_s
    reason = "server did not start"
    while time.monotonic() < deadline:
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
    url = f"{base}/users/{urllib.request.quote(login)}/recommendations?k=10"
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
    """Standalone entry (`python -m batchrec_dagster.serving.process.command`), as `batchrec serve`."""
    parser = argparse.ArgumentParser(prog="batchrec")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_command(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
