"""`batchrec registry`: the registered models with their comparable scores, the champion, the pin
and the bans; `batchrec registry pin|unpin|ban|unban` for operators (registry/operator_actions.py).

Each operator action is also reported to Dagit as an observation of the `model_evaluation` asset
(the Dagster instance in DAGSTER_HOME, the same one `batchrec dev` and `batchrec materialize` use),
so the asset's timeline shows who changed the selection, when and why, next to the hourly
evaluations whose metadata lists the pin and bans in force.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from batchrec_dagster.registry.defaults import MAX_MODEL_AGE_HOURS, SelectionPolicy
from batchrec_dagster.settings import get_settings

EVALUATION_ASSET = "model_evaluation"


def _database() -> Any:
    from batchrec_dagster.deployments import open_database

    return open_database(get_settings())


def _positive_hours(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of hours, not {text}")
    return value


def add_max_age_argument(parser: argparse.ArgumentParser) -> None:
    """`--max-age-hours`, for every command that picks the served model."""
    parser.add_argument("--max-age-hours", type=_positive_hours,
                        help=f"default: BATCHREC_MODEL_MAX_AGE_HOURS ({MAX_MODEL_AGE_HOURS:g})")


def policy_of(args: argparse.Namespace) -> SelectionPolicy:
    """The settings' selection policy, with `--max-age-hours` when it was given."""
    return get_settings().selection_policy(args.max_age_hours)


def observe_in_dagit(outcome: Any) -> str:
    """Record the action as an AssetObservation of model_evaluation; says where, or why not."""
    import dagster as dg

    from batchrec_dagster.cli.materialize import prepare_dagster_home

    action = outcome.action
    decision = outcome.decision
    metadata: dict[str, Any] = {
        "operator_action": action.action, "model_id": action.model_id or "", "reason": action.reason,
        "at": dg.MetadataValue.timestamp(action.at),
        "model_partition": (outcome.entry or {}).get("partition_key") or "",
    }
    if decision is not None:
        metadata.update(champion=decision.champion_id or "none", champion_reason=decision.reason)
    try:
        home = prepare_dagster_home(get_settings())
        with dg.DagsterInstance.get() as instance:
            observation = dg.AssetObservation(asset_key=EVALUATION_ASSET, metadata=metadata)
            instance.report_runless_asset_event(observation)
    except Exception as exc:  # the action is recorded in MongoDB already; Dagit is where it is shown
        return f"not shown in Dagit ({type(exc).__name__}: {exc}); the next evaluation's metadata lists it"
    return f"observation of {EVALUATION_ASSET} recorded in the Dagster instance {home}"


def cmd_registry_action(args: argparse.Namespace) -> int:
    from batchrec_dagster.registry import operator_actions

    db = _database()
    policy = policy_of(args)
    if args.registry_action == "pin":
        outcome = operator_actions.pin(db, args.model_id, args.reason, policy=policy)
    elif args.registry_action == "unpin":
        outcome = operator_actions.unpin(db, args.reason)
    elif args.registry_action == "ban":
        outcome = operator_actions.ban(db, args.model_id, args.reason, policy=policy)
    else:
        outcome = operator_actions.unban(db, args.model_id, args.reason, policy=policy)
    action = outcome.action
    print(f"{action.action} {action.model_id} at {action.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
          f"{': ' + action.reason if action.reason else ''}")
    if outcome.decision is not None:
        verb = "now" if outcome.decision.promoted else "still"
        print(f"champion {verb} {outcome.decision.champion_id}: {outcome.decision.reason}")
    print(observe_in_dagit(outcome))
    print()
    return cmd_registry_list(args)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:  # MongoDB reads a limit of 0 as "no limit"
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_registry_list(args: argparse.Namespace) -> int:
    from batchrec_dagster.cli.report import print_entry, print_registry, print_selection
    from batchrec_dagster.registry.champions import champion_for_serving, champion_history, current_champion
    from batchrec_dagster.registry.controls import current_controls
    from batchrec_dagster.registry.evaluations import latest_for_models
    from batchrec_dagster.registry.models import MODELS, recent_entries

    db = _database()
    policy = policy_of(args)
    entries = recent_entries(db, args.limit)
    if not entries:
        print(f"the registry {db.name}.{MODELS} is empty")
        return 0
    served = champion_for_serving(db, policy, datetime.now(UTC))
    controls = current_controls(db)
    comparable = latest_for_models(db, [str(e["_id"]) for e in entries])
    print_registry(entries, served, current_champion(db), controls, comparable, policy.max_age_hours)
    print_selection(served, current_champion(db), controls)
    if args.verbose:
        print("\nChampion history (newest first):")
        for record in champion_history(db, 10):
            print(f"  {record['promoted_at'].astimezone(UTC):%Y-%m-%d %H:%M:%S}  {record.get('model_id')}  "
                  f"{record.get('reason')}")
        if served is not None:
            print_entry(served, title="\nSelected:")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    return cmd_registry_action(args) if args.registry_action else cmd_registry_list(args)


def add_registry_command(sub: Any) -> None:
    p = sub.add_parser("registry", help="models, comparable scores, the champion, pins and bans; pin/ban",
                       description="Without ACTION: list the registry. ACTIONs change the selection and "
                                   "are recorded with their time and reason.")
    p.add_argument("--limit", type=_at_least_one, default=20,
                   help="how many of the newest entries to list (default: 20)")
    add_max_age_argument(p)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also the champion history and the served entry in full")
    p.set_defaults(func=cmd_registry, registry_action=None)
    actions = p.add_subparsers(dest="registry_action", metavar="ACTION")
    for name, helptext, takes_model in (
            ("pin", "serve MODEL_ID regardless of scores until unpin (refused if stale or banned)", True),
            ("unpin", "end the pin: the champion serves again", False),
            ("ban", "never select MODEL_ID (rollback); a banned champion is replaced at once", True),
            ("unban", "allow MODEL_ID again", True)):
        a = actions.add_parser(name, help=helptext)
        if takes_model:
            a.add_argument("model_id", help="the model's id (first column of `batchrec registry`)")
        a.add_argument("--reason", default="", help="recorded with the action")
