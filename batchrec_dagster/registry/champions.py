"""The champion: which model serves, since when and why, with its history (`champions`).

One answer for the server, the CLI and the pipeline: `champion_for_serving(db, policy, now)` (the
pin, else the champion) and `serving_order` (that model first, then the fallbacks by the same
ranking). The caller passes the SelectionPolicy (maximum age, tie tolerance; built from the
settings by whoever holds them), and nothing here reads the settings. Both apply promotion.decide
to what MongoDB holds now: the fresh models, their comparable scores on the
newest evaluated window (evaluations.py) and the operators' pin and bans (controls.py).

The record: `decide_and_record` runs the same decision and writes it. Each change of champion adds
a `champions` document (the history); a confirmation on a newer window updates the current one's
`decided_on`. Written by the `model_evaluation` asset (each window), by `model_registry_entry`
(a first model, or one replacing a champion that can no longer serve) and by operators' bans.

| field | |
|---|---|
| `model_id` | the champion's `models._id` as a string; null when no model can serve |
| `promoted_at`, `reason` | since when, and why (the decision's words) |
| `previous_model_id` | the champion it replaced |
| `score`, `window_start`, `window_end` | its comparable score on the window that promoted it |
| `decided_on`, `confirmed_at`, `confirmed_reason` | the newest window that promoted or confirmed it |
| `model_partition_key`, `model_data_end` | the champion's own partition (display, freshness) |
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo.database import Database

from batchrec_dagster.registry import evaluations as evals
from batchrec_dagster.registry.controls import ControlState, current_controls
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.registry.models import canonical_id, entries_by_ids, entries_with_data_end
from batchrec_dagster.registry.promotion import (
    Candidate,
    Champion,
    Controls,
    Decision,
    Pin,
    Window,
    decide,
    rank_key,
)
from batchrec_dagster.sources.mongo_quirks import upsert_keeping

CHAMPIONS = "champions"


def ensure_indexes(db: Database) -> None:
    db[CHAMPIONS].create_index([("promoted_at", pymongo.DESCENDING)], name="promoted_at")


def usable_record(doc: dict[str, Any]) -> dict[str, Any] | None:
    """`doc` with its model_id in canonical form (models.canonical_id), or None when it is not a
    record this code could have written: `promoted_at` not a date, or a `model_id` that is not an id.
    Anyone who can write to MongoDB can add one by hand (issue 18, D8: one with a string model_id
    crashed the CLI and kept a cold server from ever becoming ready)."""
    if not isinstance(doc.get("promoted_at"), datetime):
        return None
    if doc.get("model_id") is None:  # a recorded "no model can serve"
        return doc
    model_id = canonical_id(doc["model_id"])
    return {**doc, "model_id": model_id} if model_id else None


def _usable_records(db: Database, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The newest `limit` usable records, and how many unusable ones were passed over to find them."""
    records: list[dict[str, Any]] = []
    skipped = 0
    for doc in db[CHAMPIONS].find({}).sort([("promoted_at", pymongo.DESCENDING)]):
        record = usable_record(doc)
        if record is None:
            skipped += 1
            continue
        records.append(record)
        if len(records) >= limit:
            break
    return records, skipped


def _latest_record(db: Database) -> tuple[dict[str, Any] | None, int]:
    records, skipped = _usable_records(db, 1)
    return (records[0] if records else None), skipped


def current_champion(db: Database) -> dict[str, Any] | None:
    """The recorded champion (model_id, promoted_at, reason, ...), or None when there is none."""
    record, _ = _latest_record(db)
    return record if record is not None and record.get("model_id") else None


def champion_history(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """Champion changes, newest first (records that are not usable are left out)."""
    return _usable_records(db, limit)[0]


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _candidate(entry: dict[str, Any], evaluation: dict[str, Any] | None) -> Candidate:
    score = evaluation.get("score") if evaluation else None
    return Candidate(model_id=str(entry["_id"]), data_end=_utc(entry["data_end"]),
                     created_at=_utc(entry.get("created_at")) or _utc(entry["data_end"]),
                     score=float(score) if isinstance(score, int | float) else None,
                     problem=evaluation.get("problem") if evaluation else None)


class _State:
    """Everything the decision reads, gathered once from MongoDB."""

    def __init__(self, db: Database, policy: SelectionPolicy, *, now: datetime | None,
                 window_end: datetime | None):
        self.now, self.policy = now or datetime.now(UTC), policy
        self.controls: ControlState = current_controls(db)
        self.record, self.skipped_records = _latest_record(db)
        window_end = window_end or evals.newest_window_end(db)
        scores = evals.on_window(db, window_end) if window_end else {}
        self.window = None
        if scores:
            start = _utc(next(iter(scores.values())).get("window_start"))
            self.window = Window(start, window_end) if start else None
        fresh = {str(e["_id"]): e for e in entries_with_data_end(db, since=self.now - policy.max_age)}
        wanted = {self.controls.pin.model_id} if self.controls.pin and self.controls.pin.model_id else set()
        if self.record and self.record.get("model_id"):
            wanted.add(self.record["model_id"])
        self.entries = {**entries_by_ids(db, wanted - set(fresh)), **fresh}
        self.candidates = [_candidate(e, scores.get(i)) for i, e in fresh.items()]

    def champion(self) -> Champion | None:
        record = self.record
        if record is None or not record.get("model_id"):
            return None
        entry = self.entries.get(record["model_id"])
        data_end = _utc(entry.get("data_end")) if entry else _utc(record.get("model_data_end"))
        if data_end is None:  # no entry and no date of its own: nothing says it may still serve
            return None
        return Champion(record["model_id"], data_end, _utc(record.get("promoted_at")),
                        _utc(record.get("decided_on")))

    def decision_controls(self) -> Controls:
        pin, entry = self.controls.pin, None
        if pin is not None and pin.model_id:
            entry = self.entries.get(pin.model_id)
        data_end = _utc(entry.get("data_end")) if entry else None   # None: a hand-edited entry
        return Controls(Pin(pin.model_id, data_end, pin.reason) if pin and data_end else None,
                        self.controls.banned)

    def decide(self) -> Decision:
        return decide(self.candidates, self.champion(), self.decision_controls(), now=self.now,
                      max_age=self.policy.max_age, window=self.window,
                      tie_tolerance=self.policy.tie_tolerance)


def _record(db: Database, state: _State, decision: Decision) -> None:
    record, now = state.record, state.now
    if decision.promoted:
        entry = state.entries.get(decision.champion_id or "")
        window = state.window if decision.decided_on is not None else None
        db[CHAMPIONS].insert_one({
            "model_id": decision.champion_id, "promoted_at": now, "reason": decision.reason,
            "previous_model_id": record.get("model_id") if record else None,
            "score": decision.score, "decided_on": decision.decided_on,
            "window_start": window.start if window else None, "window_end": window.end if window else None,
            "model_partition_key": entry.get("partition_key") if entry else None,
            "model_data_end": entry.get("data_end") if entry else None,
        })
    elif record is not None and decision.decided_on is not None and \
            _utc(record.get("decided_on")) != decision.decided_on:
        fields = {k: v for k, v in record.items() if k != "_id"}
        fields.update(decided_on=decision.decided_on, confirmed_at=now, confirmed_reason=decision.reason)
        upsert_keeping(db[CHAMPIONS], {"_id": record["_id"]}, fields, keep={})


def decide_and_record(db: Database, policy: SelectionPolicy, *, now: datetime | None = None,
                      window_end: datetime | None = None) -> Decision:
    """Decide by `policy` on the window ending at `window_end` (default: the newest evaluated one)
    and record a change of champion or a confirmation."""
    state = _State(db, policy, now=now, window_end=window_end)
    decision = state.decide()
    _record(db, state, decision)
    return decision


def candidates_for(db: Database, window_start: datetime, policy: SelectionPolicy, *, max_candidates: int,
                   banned: Collection[str] = ()) -> list[dict[str, Any]]:
    """The models an evaluation window scores: none of their data in the window (data_end at or
    before its start), fresh relative to it, not banned, the newest `max_candidates` of them; plus
    the champion when it qualifies and those left it out (a challenger is always compared with it)."""
    entries = entries_with_data_end(db, since=window_start - policy.max_age, until=window_start)
    chosen = [e for e in entries if str(e["_id"]) not in banned][:max_candidates]
    record = current_champion(db)
    if record and record["model_id"] not in {str(e["_id"]) for e in chosen}:
        entry = entries_by_ids(db, [record["model_id"]]).get(record["model_id"])
        if entry is not None and _utc(entry["data_end"]) <= window_start and record["model_id"] not in banned:
            chosen.append(entry)
    return chosen


def _selection(state: _State, decision: Decision) -> dict[str, Any]:
    record = state.record if state.record and state.record.get("model_id") else None
    pin = state.controls.pin
    role = ("pin" if pin is not None and decision.serve_id == pin.model_id
            else "champion" if record is not None and decision.serve_id == record["model_id"] else "fallback")
    return {
        "role": role,
        "reason": decision.serve_reason if role != "fallback" else decision.reason,
        "decided_at": state.now,
        "champion": None if record is None else {
            k: record.get(k) for k in ("model_id", "promoted_at", "reason", "score", "decided_on")},
        "pin": pin.to_json() if pin else None,
        "banned": sorted(state.controls.banned),
        "skipped_champion_records": state.skipped_records,
    }


def champion_for_serving(db: Database, policy: SelectionPolicy, now: datetime | None = None
                         ) -> dict[str, Any] | None:
    """The registry entry to serve now (the pin, else the champion), with a `selection` field saying
    which and why; None when no model can serve. Read-only: a champion that went stale or was
    banned since the last recorded decision is replaced here by the same rule, not recorded."""
    state = _State(db, policy, now=now, window_end=None)
    decision = state.decide()
    entry = state.entries.get(decision.serve_id or "")
    return None if entry is None else {**entry, "selection": _selection(state, decision)}


def serving_order(db: Database, policy: SelectionPolicy, now: datetime | None = None,
                  limit: int = 5) -> list[dict[str, Any]]:
    """`champion_for_serving`'s entry first, then the other fresh, unbanned models that verified,
    best comparable score on the newest window first (then newest): what to fall back to, in
    order, when an artifact fails to load."""
    state = _State(db, policy, now=now, window_end=None)
    decision = state.decide()
    served = state.entries.get(decision.serve_id or "")
    order = [{**served, "selection": _selection(state, decision)}] if served else []
    others = sorted((c for c in state.candidates if c.model_id != decision.serve_id
                     and c.model_id not in state.controls.banned and not c.problem),
                    key=rank_key, reverse=True)
    order += [state.entries[c.model_id] for c in others]
    return order[:limit]
