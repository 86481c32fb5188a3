"""The promotion decision: which model is the champion, as one pure function (`decide`).

No database and no clock: the caller passes the candidates with their comparable scores on one
evaluation window, the current champion, the operators' pin and bans, and `now`. champions.py
gathers those from MongoDB and records the answer; the tests call `decide` on a fixed clock.

The rule (docs/pipeline.md, "Which model is served"):

1. A model can be champion only if it is fresh (`data_end >= now - max_age`), not banned and its
   artifact verified. A candidate scored on a window it was trained on is ignored (never happens
   when the evaluation picks its models correctly; checked anyway).
2. On a window, the highest comparable score wins; a tie goes to the newest model (later
   `data_end`, then later `created_at`). Scores within `tie_tolerance` of the best tie (default
   TIE_TOLERANCE, the 4 decimals they are reported with; BATCHREC_SCORE_TIE_TOLERANCE).
3. A valid champion is only replaced on a window on which it was scored itself, and never on a
   window older than the one that last decided it. So a backfill, whose windows are older than the
   champion's data, never promotes a model trained on older data over it; on a window where both
   were scored the better comparable score wins, whoever trained on newer data.
4. Without a valid champion (none yet, stale, banned, artifact failed), the best scored candidate
   takes over; if none is scored yet, the newest fresh model does (a first model must be servable
   before an hour has passed to evaluate it). A valid champion is never replaced by a model that
   has not been scored.
5. A pin overrides the champion for serving (not for the champion record) while the pinned model
   is fresh and not banned; a lapsed pin is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from batchrec_dagster.registry.defaults import TIE_TOLERANCE


@dataclass(frozen=True)
class Candidate:
    """A registered model, with its comparable score on the decision's window if it has one."""

    model_id: str
    data_end: datetime
    created_at: datetime
    score: float | None = None     # comparable score on the window; None: not scored on it
    problem: str | None = None     # why it cannot serve (e.g. its artifact failed verification)


@dataclass(frozen=True)
class Champion:
    model_id: str
    data_end: datetime
    promoted_at: datetime
    decided_on: datetime | None = None   # end of the newest window that promoted or confirmed it


@dataclass(frozen=True)
class Pin:
    model_id: str
    data_end: datetime
    reason: str = ""


@dataclass(frozen=True)
class Controls:
    """What operators decided: at most one pin, any number of bans."""

    pin: Pin | None = None
    banned: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Window:
    """The evaluation window [start, end): its stars are what the candidates are scored on."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Decision:
    champion_id: str | None      # the champion after this decision
    promoted: bool               # the champion changed
    reason: str                  # why, in words (recorded with the champion)
    decided_on: datetime | None  # the window end that backs the champion now
    score: float | None = None   # the champion's comparable score on the window, when it has one
    serve_id: str | None = None  # what to serve: the pin, else the champion
    serve_reason: str = ""


def rank_key(candidate: Candidate) -> tuple[float, datetime, datetime]:
    """Highest score first; a tie goes to the newest data, then the newest registration."""
    score = candidate.score if candidate.score is not None else float("-inf")
    return (score, candidate.data_end, candidate.created_at)


def best_of(scored: Sequence[Candidate], tie_tolerance: float = TIE_TOLERANCE) -> Candidate:
    """The highest score; among the scores within `tie_tolerance` of it, the newest model."""
    top = max(c.score for c in scored if c.score is not None)
    tied = [c for c in scored if c.score is not None and c.score >= top - tie_tolerance]
    return max(tied, key=lambda c: (c.data_end, c.created_at))


def _fmt(score: float | None) -> str:
    return "unscored" if score is None else f"{score:.4f}"


def _invalid(model_id: str, data_end: datetime, *, now: datetime, max_age: timedelta,
             banned: frozenset[str], problem: str | None = None) -> str | None:
    """Why this model cannot be champion or served, or None."""
    if model_id in banned:
        return f"{model_id} is banned"
    if data_end < now - max_age:
        return f"{model_id} is stale (data_end {data_end.isoformat()} older than {max_age})"
    if problem:
        return f"{model_id} cannot serve: {problem}"
    return None


def _serving(champion_id: str | None, controls: Controls, *, now: datetime, max_age: timedelta
             ) -> tuple[str | None, str]:
    pin = controls.pin
    if pin is not None:
        lapsed = _invalid(pin.model_id, pin.data_end, now=now, max_age=max_age, banned=controls.banned)
        if lapsed is None:
            return pin.model_id, f"pinned by an operator{': ' + pin.reason if pin.reason else ''}"
        if champion_id is not None:
            return champion_id, f"champion (the pin lapsed: {lapsed})"
    return champion_id, "champion" if champion_id else "no servable model"


def _decide_champion(candidates: Sequence[Candidate], champion: Champion | None, controls: Controls, *,
                     now: datetime, max_age: timedelta, window: Window | None,
                     tie_tolerance: float) -> Decision:
    by_id = {c.model_id: c for c in candidates}
    valid = [c for c in candidates
             if _invalid(c.model_id, c.data_end, now=now, max_age=max_age, banned=controls.banned,
                         problem=c.problem) is None]
    # a score counts only on a window after the model's data: never on its own training stars
    scored = [c for c in valid if window is not None and c.score is not None and c.data_end <= window.start]
    why_not = ("there is no champion yet" if champion is None else _invalid(
        champion.model_id, champion.data_end, now=now, max_age=max_age, banned=controls.banned,
        problem=by_id[champion.model_id].problem if champion.model_id in by_id else None))

    if champion is not None and why_not is None:
        keep = Decision(champion.model_id, False, "", champion.decided_on)
        if window is None or not scored:
            return _with_reason(keep, "no comparable scores to decide on; the champion stays")
        if champion.decided_on is not None and window.end < champion.decided_on:
            return _with_reason(keep, f"window ending {window.end.isoformat()} is older than the one that "
                                      f"last decided the champion ({champion.decided_on.isoformat()})")
        own = next((c for c in scored if c.model_id == champion.model_id), None)
        if own is None:
            return _with_reason(keep, f"the champion was not scored on the window ending "
                                      f"{window.end.isoformat()} (its data is newer): no promotion from it")
        best = best_of(scored, tie_tolerance)
        if best.model_id == champion.model_id:
            return Decision(champion.model_id, False,
                            f"confirmed: best comparable score {_fmt(own.score)} of {len(scored)} on the "
                            f"window ending {window.end.isoformat()}", window.end, own.score)
        how = ("beats" if best.score > own.score + tie_tolerance
               else f"ties (within {tie_tolerance:g}) and is newer than")
        return Decision(best.model_id, True,
                        f"comparable score {_fmt(best.score)} {how} the champion {champion.model_id}'s "
                        f"{_fmt(own.score)} on the window ending {window.end.isoformat()} "
                        f"({len(scored)} scored)", window.end, best.score)

    if scored:
        best = best_of(scored, tie_tolerance)
        return Decision(best.model_id, True, f"{why_not}; best comparable score {_fmt(best.score)} of "
                                             f"{len(scored)} on the window ending {window.end.isoformat()}",
                        window.end, best.score)
    if valid:
        newest = max(valid, key=lambda c: (c.data_end, c.created_at))
        return Decision(newest.model_id, True, f"{why_not}; the newest fresh model, not yet scored on a "
                                               "window after its data", None)
    return Decision(None, champion is not None, f"{why_not}; no fresh, unbanned, verified model", None)


def _with_reason(decision: Decision, reason: str) -> Decision:
    return Decision(decision.champion_id, decision.promoted, reason, decision.decided_on, decision.score)


def decide(candidates: Sequence[Candidate], champion: Champion | None, controls: Controls, *,
           now: datetime, max_age: timedelta, window: Window | None = None,
           tie_tolerance: float = TIE_TOLERANCE) -> Decision:
    """The champion after looking at `candidates` (scored on `window`, or unscored when it is None),
    and what to serve. Pure: same inputs, same answer."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if tie_tolerance < 0:
        raise ValueError("tie_tolerance must be >= 0")
    decision = _decide_champion(candidates, champion, controls, now=now, max_age=max_age, window=window,
                                tie_tolerance=tie_tolerance)
    serve_id, serve_reason = _serving(decision.champion_id, controls, now=now, max_age=max_age)
    return Decision(decision.champion_id, decision.promoted, decision.reason, decision.decided_on,
                    decision.score, serve_id, serve_reason)
