"""Hour H, hour H+1, the evaluation and the promotion, end to end through the in-process jobs
(real MongoDB, real artifacts in a local folder), with tiny training.

Timeline (KST hours, all closed): H1 < H2 < H3.
  train H1 -> M1 (a deliberately weak model)  -> the first model is champion at once
  evaluate window H2 -> M1 scored, confirmed
  train H2 -> M2                               -> not scored yet: M1 stays champion
  evaluate window H3 -> M1 and M2 scored on the same users and stars -> M2 promoted
  evaluate window H2 again (a backfill)        -> older than the window that decided: no change
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from batchrec_dagster.cli.materialize import asset_metadata, materialize_partition
from batchrec_dagster.defs.assets.metadata import rounded
from batchrec_dagster.defs.automation.star_arrivals import latest_closed_partition
from batchrec_dagster.defs.jobs import EVALUATION_JOB_NAME
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.registry import champions, operator_actions
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.registry.evaluations import EVALUATIONS, on_window
from batchrec_dagster.registry.models import entries_for_partition
from batchrec_dagster.settings import Settings
from batchrec_dagster.sources.demo_data import load_demo
from tests.harness.deployments import TINY_DEMO, tiny_run_config

POLICY = SelectionPolicy()  # the defaults: 24 h maximum age, ties within 1e-4

BEATS_POPULARITY = "recvae_model_recvae_model_beats_popularity"


def hour_key(hours_before_latest: int) -> str:
    latest_start = partition_window(latest_closed_partition(datetime.now(UTC))[0])[0]
    return latest_closed_partition(latest_start - timedelta(hours=hours_before_latest - 1))[0]


def train(db, key: str, instance: dg.DagsterInstance, settings: Settings, **training) -> dict:
    config = tiny_run_config(**training)
    config["ops"][BEATS_POPULARITY] = {"config": {"min_margin": -1.0}}  # M1 is weak on purpose
    result = materialize_partition(key, settings=settings, run_config=config, instance=instance)
    [entry] = [e for e in entries_for_partition(db, partition_window(key)[1]) if e["run_id"] == result.run_id]
    return entry


def evaluate(key: str, instance: dg.DagsterInstance, settings: Settings) -> dict:
    result = materialize_partition(key, settings=settings, instance=instance, job_name=EVALUATION_JOB_NAME,
                                   run_config={"ops": {"model_evaluation": {"config": {"min_users": 10}}}})
    return asset_metadata(result, "model_evaluation")


@pytest.mark.slow
def test_hour_h_then_h_plus_1_evaluation_promotion_and_backfill(local_settings: Settings, mongo_db):
    h1, h2, h3 = hour_key(3), hour_key(2), hour_key(1)
    load_demo(mongo_db, TINY_DEMO, end=datetime.now(UTC))
    with dg.DagsterInstance.ephemeral() as instance:
        # hour H1: a model with almost no training; being the first, it serves at once
        m1 = train(mongo_db, h1, instance, local_settings, epochs=1, learning_rate=1e-6)
        first = champions.current_champion(mongo_db)
        assert first["model_id"] == str(m1["_id"]) and "not yet scored" in first["reason"]

        # window H2: M1 (data up to H2's start) is scored on the stars given during H2
        meta = evaluate(h2, instance, local_settings)
        assert meta["candidates"] == 1 and meta["champion"] == str(m1["_id"]) and not meta["promoted"]
        assert meta["users"] >= 10 and meta["targets"] >= meta["users"]

        # hour H2: M2 registers; without a comparable score it cannot replace M1
        m2 = train(mongo_db, h2, instance, local_settings)
        assert champions.current_champion(mongo_db)["model_id"] == str(m1["_id"])

        # window H3: both scored on the same users and stars, the better one is promoted
        meta = evaluate(h3, instance, local_settings)
        scores = on_window(mongo_db, partition_window(h3)[1])
        assert set(scores) == {str(m1["_id"]), str(m2["_id"])}
        s1, s2 = scores[str(m1["_id"])], scores[str(m2["_id"])]
        assert s1["users"] == s2["users"] == meta["users"] and s1["targets"] == s2["targets"]
        assert s2["score"] > s1["score"]
        # the metadata rounds for Dagit (defs/assets/metadata.py); the evaluations keep full precision
        assert (meta["score_age_00h"], meta["score_age_01h"]) == (rounded(s2["score"]), rounded(s1["score"]))
        assert meta["champion"] == str(m2["_id"]) and meta["promoted"]
        record = champions.current_champion(mongo_db)
        assert record["model_id"] == str(m2["_id"]) and record["previous_model_id"] == str(m1["_id"])
        assert record["score"] == s2["score"] and record["window_end"] == partition_window(h3)[1]
        assert "beats the champion" in record["reason"]
        # a model is never scored on a window it trained on: M2 has no score on H2
        assert str(m2["_id"]) not in on_window(mongo_db, partition_window(h2)[1])

        # a backfill of window H2: an older window than the one that decided M2; no change
        meta = evaluate(h2, instance, local_settings)
        assert meta["champion"] == str(m2["_id"]) and not meta["promoted"]
        assert "older than the one" in meta["champion_reason"]
        assert mongo_db[EVALUATIONS].count_documents({}) == 3  # H2 re-run replaced M1's score

    # what the server will serve: the champion, a pin over it, and a ban for rollback
    served = champions.champion_for_serving(mongo_db, POLICY)
    assert served["_id"] == m2["_id"] and served["selection"]["role"] == "champion"
    operator_actions.pin(mongo_db, str(m1["_id"]), "compare by hand", policy=POLICY)
    served = champions.champion_for_serving(mongo_db, POLICY)
    assert served["_id"] == m1["_id"] and served["selection"]["role"] == "pin"
    assert served["selection"]["pin"]["reason"] == "compare by hand"
    operator_actions.unpin(mongo_db)
    outcome = operator_actions.ban(mongo_db, str(m2["_id"]), "bad recommendations", policy=POLICY)
    assert outcome.decision.champion_id == str(m1["_id"]) and outcome.decision.promoted
    assert champions.champion_for_serving(mongo_db, POLICY)["_id"] == m1["_id"]
    history = champions.champion_history(mongo_db)
    assert [h["model_id"] for h in history] == [str(m1["_id"]), str(m2["_id"]), str(m1["_id"])]
