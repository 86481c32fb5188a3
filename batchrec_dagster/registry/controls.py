"""Operators' pins and bans: the state in force (`model_controls_state`) and its history, an
append-only log of actions (`model_controls`).

Each `batchrec registry pin|unpin|ban|unban` changes the state with ONE `find_one_and_update`
whose filter excludes the state the action conflicts with, then appends `{action, model_id,
reason, at}` to the log. So two operators at once cannot both succeed where only one may (issue
18, D13: `pin X` and `ban X` at the same time both succeeded): whichever update MongoDB applies
first wins, and the other finds the state changed and is refused.

| action | applies only when |
|---|---|
| `pin X` | X is not banned (it replaces any other pin) |
| `unpin` | the pinned model is still the one the operator saw |
| `ban X` | X is neither banned nor pinned |
| `unban X` | X is banned |

The state document: `{_id: "current", pin_id: "" | id, pin: {model_id, reason, at} | null,
bans: {<id>: {reason, at}}}` (times as ISO strings: nx-27017 turns a datetime `$set` on an existing
document into a string anyway; `pin_id` is a string because `$ne` on a null field matches nothing
there). Model ids are always canonical (models.canonical_id). A deployment whose state document
does not exist yet (older versions kept only the log) gets it from the log replayed in time order,
on its first action. Validation (a stale or unknown model cannot be pinned, ...) and the messages
are operator_actions.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymongo
import pymongo.errors
from pymongo.database import Database

from batchrec_dagster.registry.models import canonical_id

CONTROLS = "model_controls"
CONTROL_STATE = "model_controls_state"
_STATE_ID = "current"
ACTIONS = ("pin", "unpin", "ban", "unban")


@dataclass(frozen=True)
class Action:
    action: str
    model_id: str | None
    reason: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "model_id": self.model_id, "reason": self.reason,
                "at": self.at.isoformat()}


@dataclass(frozen=True)
class ControlState:
    """The pin and the bans in force, each with the action that set it."""

    pin: Action | None = None
    bans: dict[str, Action] = field(default_factory=dict)
    history: list[Action] = field(default_factory=list)   # newest first

    @property
    def banned(self) -> frozenset[str]:
        return frozenset(self.bans)


def ensure_indexes(db: Database) -> None:
    db[CONTROLS].create_index([("at", pymongo.ASCENDING)], name="at")


def _action(doc: dict[str, Any]) -> Action | None:
    """A log document, or None when it is not one this code wrote (another tool's, a typo)."""
    at = doc.get("at")
    if doc.get("action") not in ACTIONS or not isinstance(at, datetime):
        return None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    model_id = doc.get("model_id")
    model_id = canonical_id(model_id) or str(model_id) if model_id is not None else None
    return Action(doc["action"], model_id, str(doc.get("reason") or ""), at)


def _history(db: Database) -> list[Action]:
    """The log, oldest first."""
    actions = (_action(doc) for doc in db[CONTROLS].find({}).sort([("at", pymongo.ASCENDING)]))
    return [a for a in actions if a is not None]


def _replay(history: list[Action]) -> tuple[Action | None, dict[str, Action]]:
    """The pin and bans of a log (oldest first) as older versions kept them: no state document."""
    pin: Action | None = None
    bans: dict[str, Action] = {}
    for action in history:
        if action.action == "pin":
            pin = action
        elif action.action == "unpin":
            pin = None
        elif action.action == "ban" and action.model_id is not None:
            bans[action.model_id] = action
        elif action.action == "unban":
            bans.pop(action.model_id or "", None)
    return pin, bans


def _stored(action: Action) -> dict[str, str]:
    return {"model_id": action.model_id or "", "reason": action.reason, "at": action.at.isoformat()}


def _from_stored(kind: str, model_id: str, stored: Any) -> Action | None:
    if not isinstance(stored, dict):
        return None
    try:
        at = datetime.fromisoformat(str(stored.get("at")))
    except ValueError:
        at = datetime.min   # hand-edited: shown as year 1, still in force
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return Action(kind, model_id, str(stored.get("reason") or ""), at)


def _state_document(pin: Action | None, bans: dict[str, Action]) -> dict[str, Any]:
    return {"_id": _STATE_ID, "pin_id": pin.model_id if pin and pin.model_id else "",
            "pin": _stored(pin) if pin else None,
            "bans": {model_id: _stored(ban) for model_id, ban in bans.items() if canonical_id(model_id)}}


def _ensure_state(db: Database) -> None:
    """Create the state document from the log if there is none (a first action, or an upgrade)."""
    if db[CONTROL_STATE].find_one({"_id": _STATE_ID}, {"_id": 1}) is not None:
        return
    try:
        db[CONTROL_STATE].insert_one(_state_document(*_replay(_history(db))))
    except pymongo.errors.DuplicateKeyError:
        pass  # another action created it meanwhile: the same replay


def _change(action: str, model_id: str, stored: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The filter (the state in which the action applies) and the update of one action."""
    not_banned = {f"bans.{model_id}": {"$exists": False}}
    if action == "pin":
        return not_banned, {"$set": {"pin_id": model_id, "pin": stored}}
    if action == "unpin":
        return {"pin_id": model_id}, {"$set": {"pin_id": "", "pin": None}}
    if action == "ban":
        return {**not_banned, "pin_id": {"$ne": model_id}}, {"$set": {f"bans.{model_id}": stored}}
    return {f"bans.{model_id}": {"$exists": True}}, {"$unset": {f"bans.{model_id}": ""}}


def record_action(db: Database, action: str, model_id: str | None, reason: str = "",
                  at: datetime | None = None) -> Action | None:
    """Apply the action to the state in force, atomically, and log it; None when the state does not
    allow it (see the table above: another operator's action came first), and then nothing changes."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    canonical = canonical_id(model_id)
    if canonical is None:
        raise ValueError(f"{model_id!r} is not a model id")
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    done = Action(action, canonical, reason, at)
    _ensure_state(db)
    filter_, update = _change(action, canonical, _stored(done))
    if db[CONTROL_STATE].find_one_and_update({"_id": _STATE_ID, **filter_}, update) is None:
        return None
    db[CONTROLS].insert_one({"action": action, "model_id": canonical, "reason": reason, "at": at})
    return done


def current_controls(db: Database) -> ControlState:
    """The pin and bans in force (the state document; the log replayed when there is none yet) and
    the log, newest first."""
    history = _history(db)
    state = db[CONTROL_STATE].find_one({"_id": _STATE_ID})
    if state is None:
        pin, bans = _replay(history)
        return ControlState(pin, bans, history[::-1])
    pin_id = canonical_id(state.get("pin_id"))
    pin = _from_stored("pin", pin_id, state.get("pin")) if pin_id else None
    stored_bans = state.get("bans") if isinstance(state.get("bans"), dict) else {}
    bans = {model_id: ban for model_id, ban in
            ((canonical_id(k), _from_stored("ban", canonical_id(k) or "", v)) for k, v in stored_bans.items())
            if model_id and ban is not None}
    return ControlState(pin, bans, history[::-1])
