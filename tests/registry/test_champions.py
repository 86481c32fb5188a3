"""The champion record, the serving answer and the operators' pin/ban, against a real MongoDB
(no training: registry entries are written directly, scores through the evaluations collection)."""

import threading
from datetime import UTC, datetime, timedelta

import pytest

from batchrec_dagster.registry import champions, evaluations, operator_actions
from batchrec_dagster.registry.controls import current_controls
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.registry.models import ensure_indexes, register_model
from batchrec_dagster.sources.mongo import connect

POLICY = SelectionPolicy()  # the defaults: 24 h maximum age, ties within 1e-4

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
WINDOW_END = NOW.replace(minute=0)
WINDOW_START = WINDOW_END - timedelta(hours=1)


def add_model(db, name: str, data_age_h: float) -> str:
    """A registry entry whose data ends `data_age_h` hours before the window starts."""
    data_end = WINDOW_START - timedelta(hours=data_age_h)
    stored = register_model(db, {
        "run_id": name, "partition_key": name, "model_kind": "recvae", "score": 0.5,
        "file_name": f"{name}.pt", "bucket": "b", "sha256": "0" * 64, "size_bytes": 1,
        "data_start": data_end - timedelta(hours=1), "data_end": data_end,
        "created_at": data_end + timedelta(minutes=10)})
    return str(stored["_id"])


def score(db, model_id: str, value: float | None, problem: str | None = None) -> None:
    evaluations.record_evaluation(db, {"model_id": model_id, "window_start": WINDOW_START,
                                       "window_end": WINDOW_END, "score": value, "problem": problem})


def decided(db, champion: tuple[float, float], other: tuple[float, float]) -> tuple[str, str]:
    """Models `champion` and `other` (each: data age in hours, score on the window), and the default
    policy's decision on the window, which makes the better scored one champion."""
    ids = []
    for name, (age, value) in (("champion", champion), ("other", other)):
        ids.append(add_model(db, name, age))
        score(db, ids[-1], value)
    champions.decide_and_record(db, POLICY, now=NOW, window_end=WINDOW_END)
    return ids[0], ids[1]


@pytest.fixture
def db(mongo_db):
    for ensure in (ensure_indexes, evaluations.ensure_indexes, champions.ensure_indexes):
        ensure(mongo_db)
    return mongo_db


def test_the_first_model_serves_at_once_and_scores_decide_after(db):
    assert champions.champion_for_serving(db, POLICY, NOW) is None
    old = add_model(db, "old", 2)
    decision = champions.decide_and_record(db, POLICY, now=NOW)
    assert decision.champion_id == old and decision.decided_on is None
    new = add_model(db, "new", 0)
    assert champions.decide_and_record(db, POLICY, now=NOW).champion_id == old  # unscored: no say
    score(db, old, 0.20)
    score(db, new, 0.25)
    decision = champions.decide_and_record(db, POLICY, now=NOW, window_end=WINDOW_END)
    assert (decision.champion_id, decision.promoted, decision.decided_on) == (new, True, WINDOW_END)
    record = champions.current_champion(db)
    assert (record["model_id"], record["previous_model_id"], record["score"]) == (new, old, 0.25)
    assert record["promoted_at"] == NOW and record["window_start"] == WINDOW_START
    # deciding again on the same window changes nothing and records nothing new
    again = champions.decide_and_record(db, POLICY, now=NOW + timedelta(minutes=5), window_end=WINDOW_END)
    assert (again.champion_id, again.promoted) == (new, False)
    assert len(champions.champion_history(db)) == 2
    order = champions.serving_order(db, POLICY, NOW)
    assert [str(e["_id"]) for e in order] == [new, old]
    assert order[0]["selection"]["role"] == "champion"


def test_a_champion_that_goes_stale_is_replaced_when_read_and_when_recorded(db):
    old = add_model(db, "old", 20)
    new = add_model(db, "new", 0)
    score(db, old, 0.30)
    score(db, new, 0.20)
    assert champions.decide_and_record(db, POLICY, now=NOW, window_end=WINDOW_END).champion_id == old
    later = NOW + timedelta(hours=6)   # old's data is now older than 24 h
    served = champions.champion_for_serving(db, POLICY, later)
    assert str(served["_id"]) == new and served["selection"]["role"] == "fallback"
    assert "stale" in served["selection"]["reason"]
    assert champions.current_champion(db)["model_id"] == old  # reading never writes
    assert champions.decide_and_record(db, POLICY, now=later).champion_id == new


def test_pin_and_ban_are_recorded_with_time_and_reason_and_refused_when_unsafe(db):
    stale = add_model(db, "stale", 30)
    champion, other = decided(db, champion=(1, 0.3), other=(2, 0.2))

    with pytest.raises(operator_actions.OperatorError, match="stale and is never served"):
        operator_actions.pin(db, stale, now=NOW, policy=POLICY)
    with pytest.raises(operator_actions.OperatorError, match="no model with id 'nope'"):
        operator_actions.pin(db, "nope", now=NOW, policy=POLICY)
    with pytest.raises(operator_actions.OperatorError, match="no model is pinned"):
        operator_actions.unpin(db, now=NOW)

    operator_actions.pin(db, other, "canary", now=NOW, policy=POLICY)
    assert str(champions.champion_for_serving(db, POLICY, NOW)["_id"]) == other
    with pytest.raises(operator_actions.OperatorError, match="is pinned; unpin it first"):
        operator_actions.ban(db, other, now=NOW, policy=POLICY)
    operator_actions.unpin(db, "canary done", now=NOW + timedelta(seconds=1))

    outcome = operator_actions.ban(db, champion, "leaks private repos", now=NOW + timedelta(seconds=2),
                            policy=POLICY)
    assert outcome.decision.champion_id == other and outcome.decision.promoted
    assert "is banned" in champions.current_champion(db)["reason"]
    with pytest.raises(operator_actions.OperatorError,
                       match="is banned .*leaks private repos.*unban it first"):
        operator_actions.pin(db, champion, now=NOW + timedelta(seconds=3), policy=POLICY)
    with pytest.raises(operator_actions.OperatorError, match="already banned"):
        operator_actions.ban(db, champion, now=NOW + timedelta(seconds=3), policy=POLICY)

    controls = current_controls(db)
    assert controls.pin is None and set(controls.bans) == {champion}
    assert [(a.action, a.reason) for a in controls.history] == [
        ("ban", "leaks private repos"), ("unpin", "canary done"), ("pin", "canary")]
    assert controls.history[0].at == NOW + timedelta(seconds=2)

    # unban: the better model is champion again on the same window
    outcome = operator_actions.unban(db, champion, "false alarm", now=NOW + timedelta(seconds=4),
                                     policy=POLICY)
    assert outcome.decision.champion_id == champion
    with pytest.raises(operator_actions.OperatorError, match="is not banned"):
        operator_actions.unban(db, champion, now=NOW + timedelta(seconds=5), policy=POLICY)


def test_the_policy_passed_in_decides_ties_and_freshness(db):
    """The tie tolerance and the maximum age are the caller's (SelectionPolicy), not the settings'."""
    champion, newer = decided(db, champion=(2, 0.300), other=(1, 0.297))
    assert champions.current_champion(db)["model_id"] == champion  # 0.003 apart: no tie by default
    lenient = SelectionPolicy(tie_tolerance=0.005)
    served = champions.champion_for_serving(db, lenient, NOW)
    assert str(served["_id"]) == newer  # a tie within 0.005, which the newer model wins
    decision = champions.decide_and_record(db, lenient, now=NOW + timedelta(minutes=1), window_end=WINDOW_END)
    assert decision.promoted and decision.champion_id == newer and "ties (within 0.005)" in decision.reason
    # their data ended 3.5 h and 2.5 h before NOW: a 3 h maximum age leaves the newer one, 2 h none
    assert [str(e["_id"]) for e in champions.serving_order(db, SelectionPolicy(timedelta(hours=3)), NOW)
            ] == [newer]
    assert champions.serving_order(db, SelectionPolicy(timedelta(hours=2)), NOW) == []
    with pytest.raises(ValueError, match="tie_tolerance must be >= 0"):
        SelectionPolicy(tie_tolerance=-1)


def test_a_champion_whose_artifact_fails_is_replaced(db):
    champion, other = decided(db, champion=(1, 0.3), other=(2, 0.2))
    score(db, champion, None, problem="ArtifactMismatchError: sha256 differs")
    decision = champions.decide_and_record(db, POLICY, now=NOW, window_end=WINDOW_END)
    assert decision.champion_id == other and "sha256 differs" in decision.reason
    assert [str(e["_id"]) for e in champions.serving_order(db, POLICY, NOW)] == [other]


def _at_once(*calls) -> list[object]:
    """Run the calls in threads released together; each result is the return value or the error."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except operator_actions.OperatorError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results


def test_pin_and_ban_of_one_model_at_the_same_time_never_both_succeed(db, mongo_server_uri):
    """Issue 18 D13: `pin X` and `ban X` at once both succeeded (each checked, then appended). Real
    concurrent calls, each on its own client as two operators' commands would be: exactly one wins,
    and the state is the winner's."""
    models = [add_model(db, f"m{i}", 1 + i / 10) for i in range(8)]
    clients = [connect(mongo_server_uri) for _ in range(3)]
    pin_db, ban_db, other_db = (c[db.name] for c in clients)
    try:
        for i, model in enumerate(models):
            at = NOW + timedelta(seconds=i)
            pinned, banned = _at_once(
                lambda m=model, t=at: operator_actions.pin(pin_db, m, "canary", now=t, policy=POLICY),
                lambda m=model, t=at: operator_actions.ban(ban_db, m, "rollback", now=t, policy=POLICY))
            wins = [not isinstance(r, operator_actions.OperatorError) for r in (pinned, banned)]
            assert sum(wins) == 1, (pinned, banned)
            controls = current_controls(db)
            if wins[0]:
                assert controls.pin.model_id == model and model not in controls.banned
                assert "is pinned" in str(banned)
                operator_actions.unpin(db, now=at)
            else:
                assert model in controls.banned and (controls.pin is None or controls.pin.model_id != model)
                assert "is banned" in str(pinned)
        # two operators banning one model at once: one ban, one "already banned"
        target = add_model(db, "target", 1)
        results = _at_once(*(lambda d=d: operator_actions.ban(d, target, now=NOW, policy=POLICY)
                             for d in (pin_db, ban_db, other_db)))
        assert sum(not isinstance(r, operator_actions.OperatorError) for r in results) == 1
        assert sum(1 for a in current_controls(db).history if a.model_id == target) == 1
    finally:
        for client in clients:
            client.close()
