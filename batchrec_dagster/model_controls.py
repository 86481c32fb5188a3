"""The `model_controls` collection: operators' pins and bans, as an append-only log of actions.

Each `batchrec registry pin|unpin|ban|unban` adds one document `{action, model_id, reason, at}`;
nothing is updated or deleted, so the log is the history. The state in force is the log replayed
in time order: the last `pin` not followed by an `unpin` is the pin (a new pin replaces the old
one), and a model is banned when its last `ban`/`unban` action is a `ban`. Validation (a stale or
banned model cannot be pinned, ...) is operators.py's job; this module only stores and replays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo.database import Database

CONTROLS = "model_controls"
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


def record_action(db: Database, action: str, model_id: str | None, reason: str = "",
                  at: datetime | None = None) -> Action:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    db[CONTROLS].insert_one({"action": action, "model_id": model_id, "reason": reason, "at": at})
    return Action(action, model_id, reason, at)


def _action(doc: dict[str, Any]) -> Action | None:
    """A log document, or None when it is not one this code wrote (another tool's, a typo)."""
    at = doc.get("at")
    if doc.get("action") not in ACTIONS or not isinstance(at, datetime):
        return None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    model_id = doc.get("model_id")
    return Action(doc["action"], str(model_id) if model_id is not None else None,
                  str(doc.get("reason") or ""), at)


def current_controls(db: Database) -> ControlState:
    """Replay the log (oldest first) into the pin and bans in force."""
    pin: Action | None = None
    bans: dict[str, Action] = {}
    history: list[Action] = []
    for doc in db[CONTROLS].find({}).sort([("at", pymongo.ASCENDING)]):
        action = _action(doc)
        if action is None:
            continue
        history.append(action)
        if action.action == "pin":
            pin = action
        elif action.action == "unpin":
            pin = None
        elif action.action == "ban" and action.model_id is not None:
            bans[action.model_id] = action
        elif action.action == "unban":
            bans.pop(action.model_id or "", None)
    return ControlState(pin, bans, history[::-1])
