"""What `GET /model` and the page say about the served model, the challenger and the last polls."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from batchrec_dagster.serving.model.loaded import LoadedModel, json_safe
from batchrec_dagster.serving.model.manager import ModelManager


def age_hours(model: LoadedModel, now: datetime) -> float | None:
    """Hours since the end of the model's training data (what the max-age rule looks at)."""
    if model.data_end is None:
        return None
    return round((now - model.data_end).total_seconds() / 3600, 3)


def describe(model: LoadedModel, now: datetime) -> dict[str, Any]:
    """A loaded model: its summary, size, scorer, when and how fast it loaded, and its age."""
    return {**model.summary, "n_items": model.n_items, "scorer": model.scorer.mode,
            "top_k": model.ann,  # exact or approximate path, the index's source and recall
            "loaded_at": model.loaded_at.isoformat(), "load_seconds": round(model.load_seconds, 3),
            "names_source": model.names_source,
            "data_end": model.data_end.isoformat() if model.data_end else None,
            "age_hours": age_hours(model, now)}


def manager_status(manager: ModelManager) -> dict[str, Any]:
    now = manager.now()
    (current, selection), challenger = manager.published(), manager.challenger
    error, outcome = manager.last_error, manager.last_outcome
    return {
        "ready": current is not None,
        "model": None if current is None else {**describe(current, now), "entry": current.entry},
        "challenger": None if challenger is None else describe(challenger, now),
        "challenger_error": manager.challenger_error.to_json() if manager.challenger_error else None,
        # why the served model serves (pin, champion, fallback or kept), as of the last poll
        "selection": json_safe(selection),
        "withdrawn": manager.withdrawn,
        "last_check_at": manager.last_check_at.isoformat() if manager.last_check_at else None,
        "last_outcome": None if outcome is None else {
            "outcome": outcome.outcome, "entry_id": outcome.entry_id, "message": outcome.message},
        "last_swap_error": error.to_json() if error else None,
        "rejected_candidates": [e.to_json() for e in manager.rejected],
        "registry_reachable": manager.registry_reachable,
        "swaps": manager.swaps,
        "failed_loads": manager.failed_loads,
        "poll_errors": manager.poll_errors,
        "poll_seconds": manager.poll_seconds,
        "max_age_hours": manager.policy.max_age_hours,
        "store": getattr(manager.store, "location", None),
    }
