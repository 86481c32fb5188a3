"""`batchrec registry` and its pin/unpin/ban/unban actions, against the test MongoDB and a real
Dagster instance (the local DAGSTER_HOME) for the Dagit observations."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from batchrec_dagster.cli.commands import build_parser, main
from batchrec_dagster.registry import champions, controls, evaluations
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.registry.models import ensure_indexes, register_model

POLICY = SelectionPolicy()  # the defaults: 24 h maximum age, ties within 1e-4

NOW = datetime.now(UTC)


def add_model(db, name: str, data_age_h: float) -> str:
    data_end = (NOW - timedelta(hours=data_age_h)).replace(minute=0, second=0, microsecond=0)
    stored = register_model(db, {
        "run_id": name, "partition_key": name, "model_kind": "recvae", "score": 0.4, "validation_score": 0.5,
        "file_name": f"recvae_{name}.pt", "bucket": "b", "sha256": "0" * 64, "size_bytes": 1,
        "data_start": data_end - timedelta(hours=1), "data_end": data_end})
    return str(stored["_id"])


def test_pin_ban_and_the_listing(local_env: Path, mongo_db, capsys):
    ensure_indexes(mongo_db)
    older, newer = add_model(mongo_db, "older", 3), add_model(mongo_db, "newer", 2)
    stale = add_model(mongo_db, "stale", 40)
    window_end = (NOW - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    for model_id, score in ((older, 0.31), (newer, 0.27)):
        evaluations.record_evaluation(mongo_db, {
            "model_id": model_id, "window_start": window_end - timedelta(hours=1), "window_end": window_end,
            "score": score, "window_partition_key": "2026-11-30-10:00"})
    champions.decide_and_record(mongo_db, POLICY, window_end=window_end)

    assert main(["registry"]) == 0
    out = capsys.readouterr().out
    listing = {line[2:26].strip(): line for line in out.splitlines()
               if line[2:26].strip() in (older, newer, stale)}
    assert listing[older].startswith("* ") and "0.3100 @11-30-10:00" in listing[older]
    assert "champion" in listing[older]
    assert "0.2700" in listing[newer] and "not yet" in listing[stale]
    assert f"champion: {older}" in out and "pinned:   none" in out

    assert main(["registry", "pin", stale, "--reason", "old is gold"]) == 1
    assert "is stale and is never served" in capsys.readouterr().err

    assert main(["registry", "pin", newer, "--reason", "canary for issue 31"]) == 0
    out = capsys.readouterr().out
    assert f"pinned:   {newer} since" in out and "canary for issue 31" in out
    assert f"serving:  {newer} (pin)" in out
    assert "observation of model_evaluation recorded" in out

    assert main(["registry", "unpin"]) == 0
    capsys.readouterr()
    assert main(["registry", "ban", older, "--reason", "rollback"]) == 0
    out = capsys.readouterr().out
    assert f"champion now {newer}" in out and f"banned:   {older} since" in out and ": rollback" in out

    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_observations(dg.AssetKey("model_evaluation"), limit=10).records
    actions = [r.asset_observation.metadata["operator_action"].value for r in records]
    assert actions == ["ban", "unpin", "pin"]
    assert records[0].asset_observation.metadata["reason"].value == "rollback"
    assert records[0].asset_observation.metadata["champion"].value == newer


def test_registry_actions_are_wired():
    parser = build_parser()
    for argv, action in ((["registry", "pin", "x", "--reason", "r"], "pin"), (["registry", "unpin"], "unpin"),
                         (["registry", "ban", "x"], "ban"), (["registry", "unban", "x"], "unban"),
                         (["registry"], None)):
        args = parser.parse_args(argv)
        assert callable(args.func) and args.registry_action == action, argv


def test_an_id_in_upper_case_is_the_same_model(local_env: Path, mongo_db, capsys):
    """Issue 18 D4: `ban <ID IN UPPER CASE>` was recorded and listed, yet the model stayed champion
    and served; `pin <UPPER>` exited 0 and changed nothing."""
    ensure_indexes(mongo_db)
    older, newer = add_model(mongo_db, "older", 3), add_model(mongo_db, "newer", 2)
    champions.decide_and_record(mongo_db, POLICY)
    assert champions.current_champion(mongo_db)["model_id"] == newer   # unscored: the newest

    assert main(["registry", "ban", newer.upper(), "--reason", "shouting"]) == 0
    out = capsys.readouterr().out
    assert f"champion now {older}" in out and f"banned:   {newer} since" in out
    assert str(champions.champion_for_serving(mongo_db, POLICY)["_id"]) == older

    assert main(["registry", "pin", newer.upper()]) == 1   # banned, whatever the case
    assert "is banned" in capsys.readouterr().err
    assert main(["registry", "unban", newer.upper()]) == 0
    capsys.readouterr()
    assert main(["registry", "pin", older.upper(), "--reason", "canary"]) == 0
    assert f"serving:  {older} (pin)" in capsys.readouterr().out
    served = champions.champion_for_serving(mongo_db, POLICY)
    assert str(served["_id"]) == older and served["selection"]["role"] == "pin"


def test_an_upper_case_ban_logged_by_an_older_version_is_applied(mongo_db):
    """D4: a log written before the fix holds the id as typed; it bans the model all the same."""
    ensure_indexes(mongo_db)
    older, newer = add_model(mongo_db, "older", 3), add_model(mongo_db, "newer", 2)
    mongo_db["model_controls"].insert_one({"action": "ban", "model_id": newer.upper(), "reason": "old log",
                                           "at": NOW - timedelta(minutes=5)})
    assert controls.current_controls(mongo_db).banned == {newer}
    assert str(champions.champion_for_serving(mongo_db, POLICY)["_id"]) == older
