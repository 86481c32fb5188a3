"""Peak memory of a pipeline run with one absurdly long repository name (issue 13 point 6).

For each code tree (this checkout, and optionally an older one given with `--baseline DIR`, e.g.
`git archive 50ca59a batchrec_dagster recvae dagster.yaml workspace.yaml | tar -x -C DIR`), and
with and without one extra repository whose `full_name` has `--name-length` characters (starred
by 10 users, so it passes the filters), it loads the demo data into a fresh embedded MongoDB
(nx-27017) and runs `batchrec materialize` with the demo's training settings (20 epochs, 60 s
budget, patience 4) in a child process, all five assets in-process. Peak memory = that child's
maximum resident set size (its own rusage, from wait4).

    python benchmarks/bench_long_names.py --baseline /tmp/base   # writes benchmarks/results/long_names.md
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchrec_dagster.localstack.processes import stop_process  # noqa: E402
from batchrec_dagster.sources.embedded_mongo import mongo_uri, start_server, wait_until_serving  # noqa: E402
from batchrec_dagster.sources.mongo import connect  # noqa: E402
from tests.harness.servers import free_port  # noqa: E402

LONG_REPO_ID = 9_999_999
TRAINING = ["--epochs", "20", "--time-budget", "60", "--patience", "4"]  # as `batchrec demo`


def _cli(code_dir: Path, args: list[str], env: dict[str, str]) -> float:
    """Run `batchrec ARGS` from `code_dir` in a child; its peak RSS in GB (wait4's own rusage)."""
    runner = (f"import sys; sys.path.insert(0, {str(code_dir)!r}); "
              f"from batchrec_dagster.cli.commands import main; sys.exit(main({args!r}))")
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-c", runner], env=env, cwd=code_dir,
                                 stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"batchrec {' '.join(args)} failed:\n{err.read()[-3000:].decode()}")
    return usage.ru_maxrss / 1024 / 1024  # KiB on Linux


def _add_long_name(uri: str, length: int) -> None:
    client = connect(uri)
    db = client["batchrec"]
    db.repositories.insert_one({"_id": LONG_REPO_ID, "full_name": "o/" + "n" * (length - 2),
                                "stars": 1000, "language": "Go"})
    when = datetime.now(UTC) - timedelta(days=2)
    users = [u["_id"] for u in db.users.find({}, {"_id": 1}).limit(10)]
    db.stars.insert_many([{"user_id": u, "repo_id": LONG_REPO_ID, "starred_at": when} for u in users])
    client.close()


def measure(code_dir: Path, name_length: int | None) -> float:
    with tempfile.TemporaryDirectory(prefix="bench_long_names_") as tmp:
        data_dir, port = Path(tmp) / "mongo", free_port()
        server = start_server(data_dir, port)
        try:
            uri = mongo_uri("127.0.0.1", port)
            wait_until_serving(uri, server)
            env = {**os.environ, "BATCHREC_HOME": str(Path(tmp) / "home"), "MONGODB_URI": uri,
                   "BATCHREC_DEPLOYMENT": "local"}
            env.pop("DAGSTER_HOME", None)
            _cli(code_dir, ["load-demo"], env)
            if name_length:
                _add_long_name(uri, name_length)
            return _cli(code_dir, ["materialize", *TRAINING], env)
        finally:
            stop_process(server.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="an older code tree to compare with")
    parser.add_argument("--name-length", type=int, default=250_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "long_names.md")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    trees = [("this checkout", ROOT)] + ([("baseline", args.baseline)] if args.baseline else [])
    for label, tree in trees:
        for length in (None, args.name_length):
            gb = measure(tree, length)
            rows.append((label, length, gb, os.getloadavg()))
            print(f"{label:14} name {length or 'none':>8}: peak RSS {gb:.2f} GB", flush=True)
    lines = [
        "# Peak memory with one long repository name (issue 13 point 6)", "",
        f"Command: `python benchmarks/bench_long_names.py{' --baseline DIR' if args.baseline else ''}`"
        f" (baseline: {args.baseline or 'none'})  ",
        f"Run {datetime.now(UTC).isoformat(timespec='seconds')} on {os.cpu_count()} CPUs "
        f"({platform.machine()}); load average before {' '.join(f'{x:.2f}' for x in load_before)} "
        "(the cores are shared with other work; memory is not affected by load).", "",
        f"Demo data (2,000 users, 800 repositories), `batchrec materialize {' '.join(TRAINING)}` (all "
        "five assets in one process). Peak = maximum resident set size of that process.", "",
        "| code | extra repository name | peak RSS GB | load avg |", "|---|---|---:|---|",
    ]
    for label, length, gb, load in rows:
        name = f"{length:,} characters" if length else "none"
        lines.append(f"| {label} | {name} | {gb:.2f} | {' '.join(f'{x:.2f}' for x in load)} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
