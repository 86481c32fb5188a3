"""The promotion decision (promotion.decide) on a fixed clock: pure, no servers."""

from datetime import UTC, datetime, timedelta

import pytest

from batchrec_dagster.registry.promotion import Candidate, Champion, Controls, Pin, Window, decide

NOW = datetime(2026, 11, 30, 3, 2, tzinfo=UTC)          # 12:02 KST
MAX_AGE = timedelta(hours=24)
# the newest closed hour: 11:00-12:00 KST; models of earlier hours never saw its stars
WINDOW = Window(datetime(2026, 11, 30, 2, tzinfo=UTC), datetime(2026, 11, 30, 3, tzinfo=UTC))


def hour(h: float) -> datetime:
    """data_end of the model trained on data up to `h` hours before the window starts."""
    return WINDOW.start - timedelta(hours=h)


def model(model_id: str, data_age_h: float, score: float | None = None, *, created_min: int = 5,
          problem: str | None = None) -> Candidate:
    data_end = hour(data_age_h)
    return Candidate(model_id, data_end, data_end + timedelta(minutes=created_min), score, problem)


def champion(model_id: str, data_age_h: float, decided_on: datetime | None = None) -> Champion:
    return Champion(model_id, hour(data_age_h), hour(data_age_h) + timedelta(minutes=30), decided_on)


def run(candidates, current=None, controls=None, window=WINDOW, now=NOW):
    return decide(candidates, current, controls or Controls(), now=now, max_age=MAX_AGE, window=window)


def test_the_best_comparable_score_replaces_the_champion():
    d = run([model("a", 2, 0.20), model("b", 1, 0.25), model("c", 0, 0.22)], champion("a", 2, hour(1)))
    assert (d.champion_id, d.promoted, d.score, d.decided_on) == ("b", True, 0.25, WINDOW.end)
    assert "0.2500 beats the champion a's 0.2000" in d.reason
    assert (d.serve_id, d.serve_reason) == ("b", "champion")


def test_a_champion_that_stays_best_is_confirmed_on_the_newer_window():
    d = run([model("a", 2, 0.30), model("b", 1, 0.25)], champion("a", 2, hour(1)))
    assert (d.champion_id, d.promoted, d.decided_on, d.score) == ("a", False, WINDOW.end, 0.30)
    assert d.reason.startswith("confirmed")


def test_a_tie_goes_to_the_newest_data_then_the_newest_registration():
    d = run([model("old", 3, 0.25), model("new", 1, 0.25), model("mid", 2, 0.25)], champion("old", 3))
    assert d.champion_id == "new" and d.promoted
    same_hour = [model("first", 1, 0.25, created_min=5), model("rerun", 1, 0.25, created_min=40)]
    assert run(same_hour).champion_id == "rerun"
    # scores that agree to the 4 decimals they are reported with tie too (the experiment's window
    # 09: 0.381797 for hour 04 against 0.381765 for hour 08): the newer model wins
    d = run([model("h04", 4, 0.381797), model("h08", 0, 0.381765)], champion("h04", 4, hour(1)))
    assert (d.champion_id, d.promoted) == ("h08", True) and "ties (within 0.0001) and is newer" in d.reason
    # a difference above the tolerance is not a tie
    assert run([model("old", 4, 0.3820), model("new", 0, 0.3818)]).champion_id == "old"
    wide = decide([model("old", 4, 0.3850), model("new", 0, 0.3818)], None, Controls(), now=NOW,
                  max_age=MAX_AGE, window=WINDOW, tie_tolerance=0.005)
    assert wide.champion_id == "new"


def test_stale_models_never_win_and_a_stale_champion_is_replaced():
    stale = model("stale", 30, 0.90)
    d = run([stale, model("fresh", 1, 0.10)], champion("stale", 30, hour(1)))
    assert d.champion_id == "fresh" and d.promoted
    assert d.reason.startswith("stale is stale")
    # nothing fresh left: no champion, and nothing to serve
    later = run([stale], champion("stale", 30), now=NOW + timedelta(days=2))
    assert (later.champion_id, later.promoted, later.serve_id) == (None, True, None)


def test_a_candidate_without_an_evaluation_never_replaces_a_valid_champion():
    d = run([model("champ", 2, 0.20), model("unscored", 0)], champion("champ", 2, hour(1)))
    assert (d.champion_id, d.promoted) == ("champ", False)
    # but the very first model serves at once, before any window after its data has closed
    first = decide([model("first", -1)], None, Controls(), now=NOW, max_age=MAX_AGE)
    assert (first.champion_id, first.promoted, first.decided_on) == ("first", True, None)
    assert "not yet scored" in first.reason


def test_an_artifact_that_fails_verification_is_passed_over():
    broken = model("broken", 1, None, problem="sha256 does not match the registry's")
    d = run([broken, model("ok", 2, 0.20)], None)
    assert d.champion_id == "ok"
    # a champion whose artifact fails is replaced by the best verified candidate
    d = run([model("champ", 3, problem="artifact missing"), model("ok", 2, 0.20)],
            champion("champ", 3, hour(1)))
    assert d.champion_id == "ok" and "champ cannot serve: artifact missing" in d.reason


def test_a_score_on_the_models_own_training_window_does_not_count():
    # data_end after the window's start: the model trained on (part of) the window's stars
    d = run([model("leaky", -1, 0.99), model("fair", 1, 0.20)], champion("fair", 1, hour(1)))
    assert d.champion_id == "fair" and not d.promoted


def test_a_backfill_never_promotes_older_data_over_a_newer_champion():
    newer = champion("newer", 1, decided_on=WINDOW.end + timedelta(hours=1))
    # a backfilled window that ends before the one that decided the champion: no say
    d = run([model("older", 5, 0.40), model("newer", 1, 0.30)], newer)
    assert (d.champion_id, d.promoted) == ("newer", False) and "older than the one" in d.reason
    # a window older than the champion's data cannot score it: no promotion from it either
    recent = Champion("recent", WINDOW.end, WINDOW.end + timedelta(minutes=30), None)
    d = run([model("older", 5, 0.40)], recent)
    assert (d.champion_id, d.promoted) == ("recent", False) and "not scored" in d.reason
    # on a window where both were scored, the better comparable score wins: here the newer one
    d = run([model("older", 5, 0.20), model("newer", 1, 0.30)], champion("newer", 1, hour(1)))
    assert (d.champion_id, d.promoted) == ("newer", False)


def test_a_pin_overrides_serving_until_it_goes_stale_and_a_ban_removes_a_model():
    pin = Pin("pinned", hour(3), "rollback after incident 7")
    d = run([model("best", 1, 0.30), model("pinned", 3, 0.10)], champion("best", 1, hour(1)), Controls(pin))
    assert (d.champion_id, d.serve_id) == ("best", "pinned")
    assert d.serve_reason == "pinned by an operator: rollback after incident 7"
    stale_pin = Controls(Pin("pinned", hour(30)))
    d = run([model("best", 1, 0.30)], champion("best", 1, hour(1)), stale_pin)
    assert d.serve_id == "best" and "the pin lapsed: pinned is stale" in d.serve_reason
    banned = Controls(banned=frozenset({"best"}))
    d = run([model("best", 1, 0.30), model("second", 2, 0.20)], champion("best", 1, hour(1)), banned)
    assert (d.champion_id, d.promoted, d.serve_id) == ("second", True, "second")
    assert d.reason.startswith("best is banned")


def test_the_clock_must_be_timezone_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        decide([], None, Controls(), now=datetime(2026, 11, 30), max_age=MAX_AGE)
