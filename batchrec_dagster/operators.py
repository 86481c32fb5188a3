"""What operators do to the selection: pin a model (serve it regardless of scores, until unpin) and
ban one (never select it, for rollback). Each action is checked, then appended to the
`model_controls` log with its time and reason (model_controls.py); a ban or unban re-runs the
promotion decision at once, so a banned champion is replaced in the record without waiting for
the next evaluation. The server reads the result through champions.champion_for_serving at its
next poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from batchrec_dagster.champions import decide_and_record, default_max_age
from batchrec_dagster.model_controls import Action, current_controls, record_action
from batchrec_dagster.model_controls import ensure_indexes as ensure_control_indexes
from batchrec_dagster.promotion import Decision
from batchrec_dagster.registry import entry_by_id


class OperatorError(ValueError):
    """The action is refused; the message says why and what to do instead."""


@dataclass(frozen=True)
class Outcome:
    action: Action
    entry: dict[str, Any] | None
    decision: Decision | None = None   # the champion decision a ban/unban triggered


def _entry(db: Database, model_id: str) -> dict[str, Any]:
    entry = entry_by_id(db, model_id)
    if entry is None:
        raise OperatorError(f"no model with id {model_id!r} in the registry "
                            "(`batchrec registry` lists the ids)")
    return entry


def _stale(entry: dict[str, Any], now: datetime, max_age: timedelta) -> str | None:
    data_end = entry["data_end"] if entry["data_end"].tzinfo else entry["data_end"].replace(tzinfo=UTC)
    if data_end < now - max_age:
        return (f"its data ends at {data_end.isoformat()}, older than the maximum age "
                f"{max_age.total_seconds() / 3600:g} h (BATCHREC_MODEL_MAX_AGE_HOURS)")
    return None


def pin(db: Database, model_id: str, reason: str = "", *, now: datetime | None = None,
        max_age: timedelta | None = None) -> Outcome:
    """Serve `model_id` regardless of scores until `unpin` (or until it goes stale)."""
    now, max_age = now or datetime.now(UTC), max_age or default_max_age()
    entry = _entry(db, model_id)
    controls = current_controls(db)
    if model_id in controls.bans:
        ban = controls.bans[model_id]
        raise OperatorError(f"model {model_id} is banned (since {ban.at.isoformat()}: "
                            f"{ban.reason or 'no reason'}); unban it first")
    stale = _stale(entry, now, max_age)
    if stale:
        raise OperatorError(f"model {model_id} is stale and is never served: {stale}")
    ensure_control_indexes(db)
    return Outcome(record_action(db, "pin", model_id, reason, now), entry)


def unpin(db: Database, reason: str = "", *, now: datetime | None = None) -> Outcome:
    pinned = current_controls(db).pin
    if pinned is None:
        raise OperatorError("no model is pinned")
    return Outcome(record_action(db, "unpin", pinned.model_id, reason, now or datetime.now(UTC)),
                   entry_by_id(db, pinned.model_id))


def ban(db: Database, model_id: str, reason: str = "", *, now: datetime | None = None,
        max_age: timedelta | None = None) -> Outcome:
    """Never select `model_id` again (until `unban`); a banned champion is replaced at once."""
    now = now or datetime.now(UTC)
    entry = _entry(db, model_id)
    controls = current_controls(db)
    if model_id in controls.bans:
        since = controls.bans[model_id].at.isoformat()
        raise OperatorError(f"model {model_id} is already banned (since {since})")
    if controls.pin is not None and controls.pin.model_id == model_id:
        raise OperatorError(f"model {model_id} is pinned; unpin it first")
    ensure_control_indexes(db)
    action = record_action(db, "ban", model_id, reason, now)
    return Outcome(action, entry, decide_and_record(db, now=now, max_age=max_age))


def unban(db: Database, model_id: str, reason: str = "", *, now: datetime | None = None,
          max_age: timedelta | None = None) -> Outcome:
    now = now or datetime.now(UTC)
    if model_id not in current_controls(db).bans:
        raise OperatorError(f"model {model_id} is not banned")
    action = record_action(db, "unban", model_id, reason, now)
    return Outcome(action, entry_by_id(db, model_id), decide_and_record(db, now=now, max_age=max_age))
