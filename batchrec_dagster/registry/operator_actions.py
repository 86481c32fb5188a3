"""What operators do to the selection: pin a model (serve it regardless of scores, until unpin) and
ban one (never select it, for rollback). Each action is checked, then applied to the state in
force in one atomic update that a conflicting action by another operator at the same time makes
fail (controls.py: of `pin X` and `ban X` at once, exactly one succeeds), and logged with its
time and reason. Ids are compared in one form, models.canonical_id. A ban or unban re-runs the
promotion decision at once, so a banned champion is replaced in the record without waiting for
the next evaluation. The server reads the result through champions.champion_for_serving at its
next poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from batchrec_dagster.registry.champions import decide_and_record
from batchrec_dagster.registry.controls import Action, ControlState, current_controls, record_action
from batchrec_dagster.registry.controls import ensure_indexes as ensure_control_indexes
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.registry.models import canonical_id, entry_by_id
from batchrec_dagster.registry.promotion import Decision


class OperatorError(ValueError):
    """The action is refused; the message says why and what to do instead."""


@dataclass(frozen=True)
class Outcome:
    action: Action
    entry: dict[str, Any] | None
    decision: Decision | None = None   # the champion decision a ban/unban triggered


def _model_id(model_id: str) -> str:
    """The canonical id (lower case); the same for every comparison (issue 18, D4)."""
    canonical = canonical_id(model_id)
    if canonical is None:
        raise OperatorError(f"no model with id {model_id!r} in the registry: an id is 24 hexadecimal "
                            "digits (`batchrec registry` lists the ids)")
    return canonical


def _entry(db: Database, model_id: str) -> dict[str, Any]:
    entry = entry_by_id(db, model_id)
    if entry is None:
        raise OperatorError(f"no model with id {model_id!r} in the registry "
                            "(`batchrec registry` lists the ids)")
    return entry


def _stale(entry: dict[str, Any], now: datetime, max_age: timedelta) -> str | None:
    data_end = entry.get("data_end")
    if not isinstance(data_end, datetime):
        # a hand-made or damaged entry: without a data_end nobody can tell its age, so it never serves
        return f"its registry entry has no data_end date (found {type(data_end).__name__}: {data_end!r:.40})"
    data_end = data_end if data_end.tzinfo else data_end.replace(tzinfo=UTC)
    if data_end < now - max_age:
        return (f"its data ends at {data_end.isoformat()}, older than the maximum age "
                f"{max_age.total_seconds() / 3600:g} h (BATCHREC_MODEL_MAX_AGE_HOURS)")
    return None


def _conflict(controls: ControlState, action: str, model_id: str | None) -> str | None:
    """Why the state in force does not allow the action (model_controls' table), in words."""
    ban = controls.bans.get(model_id or "")
    pin = controls.pin
    if action == "pin" and ban is not None:
        return (f"model {model_id} is banned (since {ban.at.isoformat()}: {ban.reason or 'no reason'}); "
                "unban it first")
    if action == "ban" and ban is not None:
        return f"model {model_id} is already banned (since {ban.at.isoformat()})"
    if action == "ban" and pin is not None and pin.model_id == model_id:
        return f"model {model_id} is pinned; unpin it first"
    if action == "unban" and ban is None:
        return f"model {model_id} is not banned"
    if action == "unpin" and (pin is None or pin.model_id != model_id):
        return "no model is pinned" if pin is None else f"model {pin.model_id} is pinned now, not {model_id}"
    return None


def _record(db: Database, action: str, model_id: str, reason: str, now: datetime) -> Action:
    """Check, then apply atomically; another operator's action in between refuses this one."""
    problem = _conflict(current_controls(db), action, model_id)
    if problem:
        raise OperatorError(problem)
    ensure_control_indexes(db)
    recorded = record_action(db, action, model_id, reason, now)
    if recorded is None:
        why = _conflict(current_controls(db), action, model_id) or "the pin or bans changed meanwhile"
        raise OperatorError(f"refused: another action came first: {why}")
    return recorded


def pin(db: Database, model_id: str, reason: str = "", *, policy: SelectionPolicy,
        now: datetime | None = None) -> Outcome:
    """Serve `model_id` regardless of scores until `unpin` (or until it goes stale by `policy`)."""
    now = now or datetime.now(UTC)
    model_id = _model_id(model_id)
    entry = _entry(db, model_id)
    stale = _stale(entry, now, policy.max_age)
    if stale:
        raise OperatorError(f"model {model_id} is stale and is never served: {stale}")
    return Outcome(_record(db, "pin", model_id, reason, now), entry)


def unpin(db: Database, reason: str = "", *, now: datetime | None = None) -> Outcome:
    pinned = current_controls(db).pin
    if pinned is None or pinned.model_id is None:
        raise OperatorError("no model is pinned")
    return Outcome(_record(db, "unpin", pinned.model_id, reason, now or datetime.now(UTC)),
                   entry_by_id(db, pinned.model_id))


def ban(db: Database, model_id: str, reason: str = "", *, policy: SelectionPolicy,
        now: datetime | None = None) -> Outcome:
    """Never select `model_id` again (until `unban`); a banned champion is replaced at once."""
    now = now or datetime.now(UTC)
    model_id = _model_id(model_id)
    entry = _entry(db, model_id)
    action = _record(db, "ban", model_id, reason, now)
    return Outcome(action, entry, decide_and_record(db, policy, now=now))


def unban(db: Database, model_id: str, reason: str = "", *, policy: SelectionPolicy,
          now: datetime | None = None) -> Outcome:
    now = now or datetime.now(UTC)
    model_id = _model_id(model_id)
    action = _record(db, "unban", model_id, reason, now)
    return Outcome(action, entry_by_id(db, model_id), decide_and_record(db, policy, now=now))
