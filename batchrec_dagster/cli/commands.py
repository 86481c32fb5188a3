"""`batchrec`: load data, run the hourly pipeline in-process, inspect the registry, recommend.

Every command works against the deployment chosen by BATCHREC_DEPLOYMENT (or `--deployment`):
`local` (default) starts the embedded MongoDB on demand and keeps artifacts under BATCHREC_HOME;
`prod` uses MONGODB_URI, GCS_BUCKET and Google credentials from the environment.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from batchrec_dagster.settings import SettingsError, get_settings, override_for_process

DEMO_TRAINING = {"epochs": 20, "time_budget_s": 60.0, "patience": 4}
DEMO_LOGIN = "demo-user-0"


class CliError(RuntimeError):
    """A user-facing failure: printed without a traceback."""


def _database() -> Any:
    from batchrec_dagster.deployments import open_database

    return open_database(get_settings())


def _artifact_store() -> Any:
    from batchrec_dagster.deployments import blob_store_for

    return blob_store_for(get_settings())


def _require_local_or_force(args: argparse.Namespace, what: str) -> None:
    if get_settings().deployment == "prod" and not args.force:
        raise CliError(f"{what} replaces the source collections of the prod database; pass --force")


# --------------------------------------------------------------------------- commands


def cmd_load_demo(args: argparse.Namespace) -> int:
    from batchrec_dagster.sources.demo_data import DemoSpec, load_demo

    _require_local_or_force(args, "load-demo")
    try:
        spec = DemoSpec(users=args.users, repos=args.repos, topics=args.topics,
                        mean_stars_per_user=args.stars_per_user, days=args.days, seed=args.seed)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    started = time.perf_counter()
    doc = load_demo(_database(), spec, layout=args.layout, replace=args.replace)
    verb = "already loaded (use --replace to regenerate)" if doc["skipped"] else "loaded"
    print(f"demo data {verb}: {doc['repositories']} repositories, {doc['users']} users, {doc['stars']} stars "
          f"({doc['layout']} layout) in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_import_csv(args: argparse.Namespace) -> int:
    from batchrec_dagster.sources.csv_import import CsvFormatError, import_csv

    _require_local_or_force(args, "import-csv")
    try:
        time_end = datetime.fromisoformat(args.time_end) if args.time_end else None
    except ValueError:
        raise CliError(f"--time-end {args.time_end!r} is not an ISO time (e.g. 2026-03-01T12:00:00+00:00)"
                       ) from None
    if time_end is not None and time_end.tzinfo is None:
        time_end = time_end.replace(tzinfo=UTC)
    for path in (args.stars_csv, args.repos):
        if path is not None and not Path(path).is_file():
            raise CliError(f"{path}: no such file")
    started = time.perf_counter()
    try:
        doc = import_csv(_database(), args.stars_csv, args.repos, time_end=time_end,
                         spread_days=args.spread_days, layout=args.layout)
    except CsvFormatError as exc:  # nothing is written before the file is parsed
        raise CliError(str(exc)) from None
    except UnicodeDecodeError as exc:
        raise CliError(f"the CSV files must be UTF-8 text: {exc}") from None
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


def _run_config_file(path: str) -> dict[str, Any]:
    """The `ops` of a --run-config JSON file; a missing or malformed file is the user's to fix."""
    try:
        extra = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"--run-config {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"--run-config {path}: not JSON ({exc})") from None
    if not isinstance(extra, dict) or not isinstance(extra.get("ops", {}), dict):
        raise CliError(f"--run-config {path}: expected a JSON object like "
                       '{"ops": {"recvae_model": {"config": {"epochs": 20}}}}')
    return extra.get("ops", {})


def cmd_materialize(args: argparse.Namespace) -> int:
    from batchrec_dagster.cli import materialize
    from batchrec_dagster.cli.report import print_entry

    # mistakes are reported before anything starts
    settings = get_settings()
    partition = materialize.partition_to_run(args.partition, settings)
    run_config = materialize.training_run_config(_training_overrides(args))
    if args.run_config:
        run_config.setdefault("ops", {}).update(_run_config_file(args.run_config))
    materialize.check_run_config(run_config, settings)
    entry = materialize.run_and_register(_database(), partition, run_config, settings)
    print_entry(entry, title="Registered:")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import dagster as dg

    from batchrec_dagster.cli import materialize

    settings = get_settings()
    partition = materialize.partition_to_run(args.partition, settings)
    materialize.prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        # the run's console log at INFO, as `materialize` has it (Dagster's default is DEBUG)
        materialize.evaluate_window(partition, materialize.training_run_config(), instance, settings)
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from batchrec_dagster.cli.recommend import recommend
    from batchrec_dagster.cli.registry import policy_of
    from batchrec_dagster.cli.report import print_recommendations

    repos = [t.strip() for t in (args.repos or "").split(",") if t.strip()]
    if (args.user is None) == (not repos):
        raise CliError("give exactly one of --user LOGIN or --repos ID,ID,...")
    if args.k < 1:
        raise CliError(f"-k must be at least 1, not {args.k}")
    result = recommend(_database(), _artifact_store(), login=args.user, repos=repos, k=args.k,
                       policy=policy_of(args))
    print_recommendations(result, f"user {args.user}" if args.user else f"repositories {args.repos}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from batchrec_dagster.localstack.dev_server import run_dev

    return run_dev(get_settings(), args.dagster_args)


def cmd_settings(args: argparse.Namespace) -> int:
    from batchrec_dagster.settings import env_names

    settings = get_settings()
    for field, variable in env_names().items():
        value = getattr(settings, field)
        shown = "(set, hidden)" if field in ("mongodb_uri", "prod_stack_pg_dsn") and value else value
        print(f"{variable:<34} {shown}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from batchrec_dagster.sources.embedded_mongo import stop_embedded_mongo

    settings = get_settings()
    stopped = stop_embedded_mongo(settings.mongo_data_dir)
    print("stopped the embedded MongoDB" if stopped
          else f"no embedded MongoDB runs from {settings.mongo_data_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from batchrec_dagster.cli import materialize
    from batchrec_dagster.cli.recommend import recommend
    from batchrec_dagster.cli.report import print_entry, print_recommendations
    from batchrec_dagster.sources.demo_data import DemoSpec, load_demo

    settings = get_settings()
    partition = materialize.partition_to_run(args.partition, settings)
    run_config = materialize.training_run_config({**DEMO_TRAINING, **_training_overrides(args)})
    materialize.check_run_config(run_config, settings)
    started = time.perf_counter()
    print(f"batchrec demo: {settings.deployment} deployment, home {settings.home}")
    db = _database()  # starts the embedded MongoDB on first use
    print(f"MongoDB ready ({db.client.address[0]}:{db.client.address[1]}, database {db.name})")
    try:
        spec = DemoSpec(users=args.users, repos=args.repos)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    doc = load_demo(db, spec)
    print(f"demo data {'already loaded' if doc['skipped'] else 'loaded'}: {doc['repositories']} "
          f"repositories, {doc['users']} users, {doc['stars']} stars spread over the last {spec.days:g} days")
    entry = materialize.run_and_register(db, partition, run_config, settings)
    print_entry(entry, title="Registered model:")
    print()
    result = recommend(db, _artifact_store(), login=DEMO_LOGIN, k=10, policy=settings.selection_policy())
    print_recommendations(result, f"user {DEMO_LOGIN}")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f}s. Next: `batchrec registry`, "
          f"`batchrec recommend --user demo-user-7`, `batchrec dev` (Dagit), `batchrec serve`.")
    return 0


# --------------------------------------------------------------------------- parser


def _add_training_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (run config of recvae_model)")
    group.add_argument("--epochs", type=int, help="most epochs of a training from scratch (full run)")
    group.add_argument("--time-budget", dest="time_budget_s", type=float, help="seconds of training at most")
    group.add_argument("--patience", type=int, help="stop after this many epochs without improvement")
    group.add_argument("--hidden-dim", type=int, help="width of the encoder's hidden layers")
    group.add_argument("--latent-dim", type=int, help="size of the latent user vector")
    group.add_argument("--learning-rate", type=float, help="Adam's learning rate")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake as one line (argparse prints the usage first), exit code 2.
    Subcommands' parsers are of the same class (add_subparsers uses the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batchrec", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployment", choices=("local", "prod"),
                        help="override BATCHREC_DEPLOYMENT for this command")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="start services, load demo data, train and register a model, recommend")
    p.add_argument("--users", type=int, default=2000, help="demo users to generate (default 2000)")
    p.add_argument("--repos", type=int, default=800, help="demo repositories to generate (default 800)")
    p.add_argument("--partition", help="partition key (default: the latest complete hour)")
    _add_training_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("load-demo", help="generate GitHub-shaped star data into MongoDB (idempotent)")
    p.add_argument("--users", type=int, default=2000, help="users to generate (default 2000)")
    p.add_argument("--repos", type=int, default=800, help="repositories to generate (default 800)")
    p.add_argument("--topics", type=int, default=12, help="latent communities of repositories")
    p.add_argument("--stars-per-user", type=float, default=25.0, help="mean stars per user")
    p.add_argument("--days", type=float, default=7.0, help="star times spread over the last N days")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed and sizes generate the same data (default 0)")
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
    p.add_argument("--layout", choices=("stars", "embedded"), default="stars",
                   help="write a stars collection, or the older star_user_list inside repositories")
    p.add_argument("--force", action="store_true", help="allow replacing data in the prod deployment")
    p.set_defaults(func=cmd_import_csv)

    p = sub.add_parser("materialize", help="run the five assets (and their checks) for one partition")
    p.add_argument("--partition", help="partition key, e.g. 2026-03-01-20:00 (default: latest complete hour)")
    p.add_argument("--run-config", help="JSON file with run config ({'ops': {asset: {'config': {...}}}})")
    _add_training_flags(p)
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("evaluate", help="score the fresh models on one hour's new stars, decide the champion")
    p.add_argument("--partition", help="the window's partition key (default: the latest complete hour)")
    p.set_defaults(func=cmd_evaluate)

    from batchrec_dagster.cli.registry import add_max_age_argument, add_registry_command

    add_registry_command(sub)

    p = sub.add_parser("recommend", help="top-k repositories from the selected model")
    p.add_argument("--user", help="GitHub login (users collection)")
    p.add_argument("--repos", help="comma-separated repository ids or owner/name")
    p.add_argument("-k", type=int, default=10, help="how many repositories to recommend (default 10)")
    add_max_age_argument(p)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("dev", help="start `dagster dev` (Dagit + daemon) with the embedded services")
    p.add_argument("dagster_args", nargs="*", help="passed on to `dagster dev` (e.g. -p 3001)")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("settings", help="print the settings in force (docs/settings.md)")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("stop", help="stop the embedded MongoDB that local commands start in the background")
    p.set_defaults(func=cmd_stop)

    from batchrec_dagster.localstack.prod_stack import add_prod_stack_command
    from batchrec_dagster.serving.process.command import add_serve_command

    add_serve_command(sub)
    add_prod_stack_command(sub)
    return parser


def _quiet_warnings() -> None:
    """Library warnings that say nothing to a CLI user (beta and preview flags, e.g. partitioned
    asset checks; torch's sparse-CSR notice)."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview).*")
    warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta.*")


def _stdout_is_a_closed_pipe() -> bool:
    """True when the reader of our stdout has gone (`batchrec ... | head` after head exited)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not raise on the closed pipe again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _fail(command: str, exc: BaseException) -> int:
    print(f"batchrec {command}: {exc}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """The `batchrec` command. A user's mistake (bad settings, arguments, partition, id) is one line
    on stderr and exit code 1, never a traceback; a reader that stops early (`| head`) ends it
    quietly with 141, as SIGPIPE would."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # only `dev` takes options of its own: they go to `dagster dev` (e.g. -p 3001)
        if args.command != "dev":
            parser.exit(2, f"batchrec {args.command}: unrecognized arguments: {' '.join(unknown)} "
                           f"(see `batchrec {args.command} --help`)\n")
        args.dagster_args = [*unknown, *args.dagster_args]
    _quiet_warnings()
    try:
        if args.deployment:
            override_for_process(BATCHREC_DEPLOYMENT=args.deployment)
        get_settings()  # invalid settings: one clear message before anything starts
        # light imports (no Dagster, no PyTorch): a command that needs neither starts at once
        from pymongo.errors import ConnectionFailure

        from batchrec_dagster.cli.errors import MaterializeError, RecommendError
        from batchrec_dagster.registry.operator_actions import OperatorError
    except SettingsError as exc:
        return _fail(args.command, exc)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe raises here, inside this handler, not at exit
        return code
    except (CliError, SettingsError, MaterializeError, RecommendError, OperatorError) as exc:
        return _fail(args.command, exc)
    except ConnectionFailure as exc:  # a wrong MONGODB_URI, or the server is down: say which
        return _fail(args.command, f"cannot reach MongoDB: {str(exc).split(', Timeout:', 1)[0]}")
    except BrokenPipeError:
        if not _stdout_is_a_closed_pipe():
            raise
        _discard_stdout()
        return 141
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
