"""`batchrec`: load data, run the hourly pipeline in-process, inspect the registry, recommend.

Every command works against the deployment chosen by BATCHREC_DEPLOYMENT (or `--deployment`):
`local` (default) starts the embedded MongoDB on demand and keeps artifacts under BATCHREC_HOME;
`prod` uses MONGODB_URI, GCS_BUCKET and Google credentials from the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batchrec_dagster.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

DEMO_TRAINING = {"epochs": 20, "time_budget_s": 60.0, "patience": 4}


class CliError(RuntimeError):
    """A user-facing failure: printed without a traceback."""


# --------------------------------------------------------------------------- helpers


def _database(settings: Settings) -> Any:
    from batchrec_dagster.mongo import MongoResource

    return MongoResource(uri=settings.mongodb_uri, database=settings.database,
                         embedded_data_dir=str(settings.mongo_data_dir),
                         embedded_port=settings.embedded_mongo_port).get_database()


def _require_local_or_force(settings: Settings, args: argparse.Namespace, what: str) -> None:
    if settings.deployment == "prod" and not args.force:
        raise CliError(f"{what} replaces the source collections of the prod database; pass --force")


def prepare_dagster_home(settings: Settings) -> Path:
    """<BATCHREC_HOME>/dagster_home with the repository's dagster.yaml, exported as DAGSTER_HOME."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    source = PROJECT_ROOT / "dagster.yaml"
    if source.is_file() and not os.environ.get("DAGSTER_HOME"):
        target = home / "dagster.yaml"
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def latest_partition_key() -> str:
    from batchrec_dagster.partitions import hourly_partitions

    key = hourly_partitions.get_last_partition_key()
    if key is None:
        raise CliError("no complete hourly partition yet (check BATCHREC_PARTITIONS_START)")
    return key


def training_run_config(training: dict[str, Any] | None = None,
                        extra: dict[str, Any] | None = None, log_level: str = "INFO") -> dict[str, Any]:
    """Run config for hourly_training_job: per-asset config plus the console log level."""
    ops: dict[str, Any] = {}
    if training:
        ops["recvae_model"] = {"config": dict(training)}
    for op, config in (extra or {}).items():
        ops.setdefault(op, {"config": {}})["config"].update(config)
    config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if ops:
        config["ops"] = ops
    return config


def materialize_partition(partition_key: str, *, run_config: dict[str, Any] | None = None,
                          deployment: str | None = None, instance: Any = None,
                          raise_on_error: bool = True, resources: dict[str, Any] | None = None) -> Any:
    """Run hourly_training_job (the five assets and their checks) in this process; `resources`
    replace the deployment's by key."""
    import dagster as dg

    from batchrec_dagster.assets import ASSETS
    from batchrec_dagster.jobs import hourly_training_job
    from batchrec_dagster.process_identity import current_process_tags
    from batchrec_dagster.resources import build_resources

    try:
        from batchrec_dagster.checks import ASSET_CHECKS
    except ImportError:
        ASSET_CHECKS = []  # noqa: N806 - the checks module is optional while it is being written
    defs = dg.Definitions(assets=ASSETS, asset_checks=ASSET_CHECKS, jobs=[hourly_training_job],
                          resources={**build_resources(deployment), **(resources or {})})
    job = defs.resolve_job_def("hourly_training_job")
    # the run lives and dies with this process: name it, so that run_reaper can fail the run
    # (and free the training pool) if this process is killed
    return job.execute_in_process(partition_key=partition_key, run_config=run_config or {},
                                  instance=instance, raise_on_error=raise_on_error,
                                  tags=current_process_tags())


def _asset_metadata(result: Any, asset: str) -> dict[str, Any]:
    import dagster as dg

    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey(asset):
            return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    return {}


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def print_entry(entry: dict[str, Any], *, title: str) -> None:
    pop = entry.get("popularity_metrics", {}).get("ndcg@100")
    metrics = entry.get("metrics", {})
    sizes = entry.get("data_sizes", {})
    print(title)
    print(f"  _id          {entry['_id']}")
    print(f"  model        {entry['model_kind']}  score (NDCG@100) {entry['score']:.4f}"
          + (f"  vs popularity {pop:.4f}" if pop is not None else ""))
    nan = float("nan")
    print(f"  recall@20/50 {metrics.get('recall@20', nan):.4f} / {metrics.get('recall@50', nan):.4f}")
    print(f"  artifact     {entry.get('uri') or entry['file_name']}  ({entry['size_bytes']} bytes, "
          f"sha256 {entry['sha256'][:16]}...)")
    print(f"  data         partition {entry['partition_key']}: [{_fmt_time(entry.get('data_start'))}, "
          f"{_fmt_time(entry.get('data_end'))}); {sizes.get('users', '?')} users x "
          f"{sizes.get('items', '?')} repositories, {sizes.get('nonzeros', '?')} stars")
    print(f"  training     {entry.get('epochs', '?')} epochs, {entry.get('training_seconds', 0):.1f}s; "
          f"run {entry['run_id']}; created {_fmt_time(entry.get('created_at'))}; "
          f"code {entry.get('code_version', '?')}")


# --------------------------------------------------------------------------- recommend


def recommend(db: Any, store: Any, *, login: str | None = None, repos: list[str] | None = None,
              k: int = 10, max_age: timedelta = timedelta(hours=24)) -> tuple[dict[str, Any], list[dict]]:
    """Top-k from the model the registry selects, for a user (by login) or a set of repositories."""
    from batchrec_dagster.registry import select_best
    from batchrec_dagster.sources import REPOSITORIES, STARS, USERS
    from batchrec_dagster.storage import sha256_hex
    from recvae import load_artifact

    entry = select_best(db, max_age=max_age)
    if entry is None:
        raise CliError(f"no model trained on data from the last {max_age} is registered; "
                       f"run `batchrec materialize` (or `batchrec demo`) first")
    data = store.read(entry["file_name"])
    if sha256_hex(data) != entry["sha256"]:
        raise CliError(f"artifact {entry['file_name']} does not match its registered checksum")
    artifact = load_artifact(data)
    names = artifact.extra.get("item_names") or [str(i) for i in artifact.recommender.item_ids]
    if login is not None:
        user = db[USERS].find_one({"login": login}, {"_id": 1})
        if user is None:
            raise CliError(f"no user with login {login!r} in {db.name}.{USERS}")
        starred = [d["repo_id"] for d in db[STARS].find({"user_id": user["_id"]}, {"_id": 0, "repo_id": 1})]
        if not starred:  # the older layout keeps stargazers inside the repository documents
            starred = [d["_id"] for d in db[REPOSITORIES].find({"star_user_list": user["_id"]}, {"_id": 1})]
    else:
        starred = []
        for token in repos or []:
            if token.lstrip("-").isdigit():
                starred.append(int(token))
            else:
                doc = db[REPOSITORIES].find_one({"full_name": token}, {"_id": 1})
                if doc is None:
                    raise CliError(f"unknown repository {token!r}")
                starred.append(doc["_id"])
    columns = artifact.recommender.index_of(starred)
    known = [int(c) for c in columns if c >= 0]
    indices, scores = artifact.recommender.recommend([known], k)
    rows = [{"rank": r + 1, "repo_id": int(artifact.recommender.item_ids[i]), "full_name": names[i],
             "score": float(s)} for r, (i, s) in enumerate(zip(indices[0], scores[0], strict=True)) if i >= 0]
    return {**entry, "input_items": len(starred), "known_items": len(known)}, rows


def print_recommendations(entry: dict[str, Any], rows: list[dict], who: str) -> None:
    print(f"Top-{len(rows)} for {who} ({entry['known_items']} of {entry['input_items']} starred repositories "
          f"known to model {entry['file_name']}):")
    for row in rows:
        print(f"  {row['rank']:>2}. {row['full_name']:<48} (repo {row['repo_id']}, score {row['score']:.3f})")


# --------------------------------------------------------------------------- commands


def cmd_load_demo(args: argparse.Namespace) -> int:
    from batchrec_dagster.demo_data import DemoSpec, load_demo

    settings = load_settings()
    _require_local_or_force(settings, args, "load-demo")
    spec = DemoSpec(users=args.users, repos=args.repos, topics=args.topics,
                    mean_stars_per_user=args.stars_per_user, days=args.days, seed=args.seed)
    started = time.perf_counter()
    doc = load_demo(_database(settings), spec, layout=args.layout, replace=args.replace)
    verb = "already loaded (use --replace to regenerate)" if doc["skipped"] else "loaded"
    print(f"demo data {verb}: {doc['repositories']} repositories, {doc['users']} users, {doc['stars']} stars "
          f"({doc['layout']} layout) in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_import_csv(args: argparse.Namespace) -> int:
    from batchrec_dagster.csv_import import import_csv

    settings = load_settings()
    _require_local_or_force(settings, args, "import-csv")
    time_end = datetime.fromisoformat(args.time_end) if args.time_end else None
    if time_end is not None and time_end.tzinfo is None:
        time_end = time_end.replace(tzinfo=UTC)
    started = time.perf_counter()
    doc = import_csv(_database(settings), args.stars_csv, args.repos, time_end=time_end,
                     spread_days=args.spread_days, layout=args.layout)
    print(f"imported {doc['stars']} stars of {doc['users']} users on {doc['repositories']} repositories "
          f"in {time.perf_counter() - started:.1f}s; skipped: {doc['skipped'] or 'none'}")
    return 0


def _training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    training: dict[str, Any] = {}
    for name in ("epochs", "time_budget_s", "hidden_dim", "latent_dim", "patience", "learning_rate"):
        value = getattr(args, name, None)
        if value is not None:
            training[name] = value
    return training


def _run_and_report(settings: Settings, partition_key: str, run_config: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    from batchrec_dagster.partitions import partition_window
    from batchrec_dagster.registry import entries_for_partition

    prepare_dagster_home(settings)
    started = time.perf_counter()
    print(f"materializing partition {partition_key} ({settings.deployment} deployment) ...", flush=True)
    with dg.DagsterInstance.get() as instance:
        result = materialize_partition(partition_key, run_config=run_config, instance=instance,
                                       raise_on_error=False)
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        raise CliError(f"run {result.run_id} failed at {', '.join(failed) or 'a step'}; see the log above "
                       f"or `batchrec dev` (Dagit) for details")
    model = _asset_metadata(result, "recvae_model")
    matrix = _asset_metadata(result, "user_item_matrix")
    print(f"run {result.run_id} succeeded in {time.perf_counter() - started:.0f}s: "
          f"{matrix.get('users')} users x {matrix.get('items')} repositories; "
          f"RecVAE NDCG@100 {model.get('score', float('nan')):.4f} vs popularity "
          f"{model.get('popularity_score', float('nan')):.4f} after {model.get('epochs')} epochs")
    entries = [e for e in entries_for_partition(_database(settings), partition_window(partition_key)[1])
               if e["run_id"] == result.run_id]
    if not entries:
        raise CliError(f"run {result.run_id} registered no model")
    return entries[-1]


def cmd_materialize(args: argparse.Namespace) -> int:
    settings = load_settings()
    partition_key = args.partition or latest_partition_key()
    run_config = training_run_config(_training_overrides(args))
    if args.run_config:
        extra = json.loads(Path(args.run_config).read_text())
        run_config.setdefault("ops", {}).update(extra.get("ops", {}))
    entry = _run_and_report(settings, partition_key, run_config)
    print_entry(entry, title="Registered:")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    import pymongo

    from batchrec_dagster.registry import MODELS, select_best

    db = _database(load_settings())
    max_age = timedelta(hours=args.max_age_hours)
    best = select_best(db, max_age=max_age)
    entries = list(db[MODELS].find({}).sort([("created_at", pymongo.DESCENDING)]).limit(args.limit))
    if not entries:
        print(f"the registry {db.name}.{MODELS} is empty")
        return 0
    print(f"{'':2}{'created (UTC)':<20} {'partition':<17} {'score':>7} {'popular':>7}  {'file':<48} run")
    for e in entries:
        mark = "* " if best is not None and e["_id"] == best["_id"] else "  "
        pop = e.get("popularity_metrics", {}).get("ndcg@100", float("nan"))
        print(f"{mark}{e['created_at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} {e['partition_key']:<17} "
              f"{e['score']:>7.4f} {pop:>7.4f}  {e['file_name']:<48} {e['run_id'][:8]}")
    print("\n* = selected for serving: highest score among models whose data_end is within "
          f"{args.max_age_hours:g} h; a tie goes to the newest.")
    if best is None:
        print("no model is selected: every entry is older than the maximum age")
    elif args.verbose:
        print_entry(best, title="\nSelected:")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from batchrec_dagster.resources import artifact_store_for

    settings = load_settings()
    repos = [t for t in (args.repos or "").split(",") if t.strip()]
    if (args.user is None) == (not repos):
        raise CliError("give exactly one of --user LOGIN or --repos ID,ID,...")
    entry, rows = recommend(_database(settings), artifact_store_for(settings), login=args.user,
                            repos=[t.strip() for t in repos], k=args.k,
                            max_age=timedelta(hours=args.max_age_hours))
    print_recommendations(entry, rows, f"user {args.user}" if args.user else f"repositories {args.repos}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    settings = load_settings()
    home = prepare_dagster_home(settings)
    if settings.deployment == "local" and not settings.mongodb_uri:
        from batchrec_dagster.embedded_mongo import ensure_embedded_mongo

        uri = ensure_embedded_mongo(settings.mongo_data_dir, settings.embedded_mongo_port)
        print(f"embedded MongoDB at {uri} (data in {settings.mongo_data_dir})")
    print(f"DAGSTER_HOME={home}; starting `dagster dev` (Ctrl-C to stop)", flush=True)
    dagster = Path(sys.executable).with_name("dagster")
    executable = str(dagster) if dagster.exists() else shutil.which("dagster") or "dagster"
    command = [executable, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), *args.dagster_args]
    os.chdir(PROJECT_ROOT)
    # exec rather than a child process: Ctrl-C and SIGTERM then reach `dagster dev` itself, which
    # shuts down its webserver, daemon and code servers (through a wrapper they were left running)
    os.execv(executable, command)
    return 0  # not reached


def cmd_stop(args: argparse.Namespace) -> int:
    from batchrec_dagster.embedded_mongo import stop_embedded_mongo

    settings = load_settings()
    stopped = stop_embedded_mongo(settings.mongo_data_dir)
    print("stopped the embedded MongoDB" if stopped
          else f"no embedded MongoDB runs from {settings.mongo_data_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from batchrec_dagster.demo_data import DemoSpec, load_demo
    from batchrec_dagster.resources import artifact_store_for

    started = time.perf_counter()
    settings = load_settings()
    print(f"batchrec demo: {settings.deployment} deployment, home {settings.home}")
    db = _database(settings)  # starts the embedded MongoDB on first use
    print(f"MongoDB ready ({db.client.address[0]}:{db.client.address[1]}, database {db.name})")
    spec = DemoSpec(users=args.users, repos=args.repos)
    doc = load_demo(db, spec)
    print(f"demo data {'already loaded' if doc['skipped'] else 'loaded'}: {doc['repositories']} "
          f"repositories, {doc['users']} users, {doc['stars']} stars spread over the last {spec.days:g} days")
    training = {**DEMO_TRAINING, **_training_overrides(args)}
    entry = _run_and_report(settings, args.partition or latest_partition_key(), training_run_config(training))
    print_entry(entry, title="Registered model:")
    login = "demo-user-0"
    rec_entry, rows = recommend(db, artifact_store_for(settings), login=login, k=10)
    print()
    print_recommendations(rec_entry, rows, f"user {login}")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f}s. Next: `batchrec registry`, "
          f"`batchrec recommend --user demo-user-7`, `batchrec dev` (Dagit), `batchrec serve`.")
    return 0


# --------------------------------------------------------------------------- parser


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (run config of recvae_model)")
    group.add_argument("--epochs", type=int)
    group.add_argument("--time-budget", dest="time_budget_s", type=float, help="seconds of training at most")
    group.add_argument("--patience", type=int, help="stop after this many epochs without improvement")
    group.add_argument("--hidden-dim", type=int)
    group.add_argument("--latent-dim", type=int)
    group.add_argument("--learning-rate", type=float)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchrec", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployment", choices=("local", "prod"),
                        help="override BATCHREC_DEPLOYMENT for this command")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="start services, load demo data, train and register a model, recommend")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--repos", type=int, default=800)
    p.add_argument("--partition", help="partition key (default: the latest complete hour)")
    _add_training_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("load-demo", help="generate GitHub-shaped star data into MongoDB (idempotent)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--repos", type=int, default=800)
    p.add_argument("--topics", type=int, default=12, help="latent communities of repositories")
    p.add_argument("--stars-per-user", type=float, default=25.0, help="mean stars per user")
    p.add_argument("--days", type=float, default=7.0, help="star times spread over the last N days")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("stars", "embedded"), default="stars",
                   help="write a stars collection, or the older star_user_list inside repositories")
    p.add_argument("--replace", action="store_true", help="regenerate even if this demo is loaded")
    p.add_argument("--force", action="store_true", help="allow replacing data in the prod deployment")
    p.set_defaults(func=cmd_load_demo)

    p = sub.add_parser("import-csv", help="replace the source data with a stars CSV")
    p.add_argument("stars_csv", help="`user,repo[,starred_at]` or `user,project,has_star`")
    p.add_argument("--repos", help="repository names CSV `index,name` (for `user,project,has_star`)")
    p.add_argument("--time-end", help="ISO time: rows without starred_at get times before it (default: now)")
    p.add_argument("--spread-days", type=float, default=7.0, help="synthetic times spread over N days")
    p.add_argument("--layout", choices=("stars", "embedded"), default="stars")
    p.add_argument("--force", action="store_true", help="allow replacing data in the prod deployment")
    p.set_defaults(func=cmd_import_csv)

    p = sub.add_parser("materialize", help="run the five assets (and their checks) for one partition")
    p.add_argument("--partition", help="partition key, e.g. 2026-03-01-20:00 (default: latest complete hour)")
    p.add_argument("--run-config", help="JSON file with run config ({'ops': {asset: {'config': {...}}}})")
    _add_training_flags(p)
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("registry", help="list registered models and the one selected for serving")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--max-age-hours", type=float, default=24.0)
    p.add_argument("-v", "--verbose", action="store_true", help="print the selected entry in full")
    p.set_defaults(func=cmd_registry)

    p = sub.add_parser("recommend", help="top-k repositories from the selected model")
    p.add_argument("--user", help="GitHub login (users collection)")
    p.add_argument("--repos", help="comma-separated repository ids or owner/name")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--max-age-hours", type=float, default=24.0)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("dev", help="start `dagster dev` (Dagit + daemon) with the embedded services")
    p.add_argument("dagster_args", nargs="*", help="passed on to `dagster dev` (e.g. -p 3001)")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("stop", help="stop the embedded MongoDB that local commands start in the background")
    p.set_defaults(func=cmd_stop)

    try:
        from batchrec_dagster.serving.cli import add_serve_command
    except ImportError as exc:
        p = sub.add_parser("serve", help="(unavailable) serve recommendations over HTTP")
        p.set_defaults(func=lambda _args, _exc=exc: _serving_missing(_exc))
    else:
        add_serve_command(sub)
    return parser


def _serving_missing(exc: ImportError) -> int:
    raise CliError(f"the serving API is not installed in this checkout (batchrec_dagster.serving.cli: {exc})")


def _quiet_warnings() -> None:
    """Library warnings that say nothing to a CLI user (beta flags, torch's sparse-CSR notice)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is currently in beta.*")
    warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta.*")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # only `dev` takes options of its own: they go to `dagster dev` (e.g. -p 3001)
        if args.command != "dev":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.dagster_args = [*unknown, *args.dagster_args]
    _quiet_warnings()
    if args.deployment:
        os.environ["BATCHREC_DEPLOYMENT"] = args.deployment
    try:
        return int(args.func(args) or 0)
    except (CliError, SettingsError) as exc:
        print(f"batchrec {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
