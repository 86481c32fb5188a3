"""model_evaluation: every fresh candidate (and the champion) scored on the same held-out window,
then the promotion decision (registry/champions.py) on those comparable scores.

Partition H is the window: the stars given during hour H, by users with enough stars before it.
It scores the models whose data ends at or before H's start (the models of hours H-1, H-2, ...;
never H's own, which trained on those stars), so a model registered for hour H-1 is first scored
on window H, right after that hour closes. docs/pipeline.md has the timeline.
"""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
import time
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from batchrec_dagster.defs.assets.common import hourly_asset, partition_seed
from batchrec_dagster.defs.assets.metadata import md_table, window_metadata
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.defs.resources import ArtifactStoreResource, MongoResource, RunDefaults
from batchrec_dagster.registry import champions, evaluations
from batchrec_dagster.registry.controls import ControlState, current_controls
from batchrec_dagster.registry.defaults import SCORE_METRIC
from batchrec_dagster.registry.promotion import Decision
from batchrec_dagster.registry.scoring import evaluate_entry, popularity_on_window
from batchrec_dagster.sources.evaluation_window import EvaluationWindow, read_window


class EvaluationConfig(dg.Config):
    """Who is scored on the window, and how many candidates at most."""

    min_history: int = Field(default=5, ge=1, description="Stars before the window a user needs to be "
                                                          "folded in (the matrix's min_items_per_user).")
    min_users: int = Field(default=20, ge=1, description="Fewer users in the window: too noisy to compare; "
                                                         "nothing is scored or promoted on it.")
    max_users: int = Field(default=5000, ge=1, description="Users scored at most (drawn per partition).")
    max_candidates: int = Field(default=48, ge=1, description="Newest candidates scored at most "
                                                              "(the champion is always scored).")


def _age_hours(window: EvaluationWindow, entry: dict[str, Any]) -> int:
    return round((window.start - entry["data_end"].astimezone(UTC)).total_seconds() / 3600)


def _score_all(context: dg.AssetExecutionContext, store: Any, window: EvaluationWindow,
               entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    rows, popularity = [], None
    for entry in entries:
        started = time.perf_counter()
        result, recommender = evaluate_entry(store, entry, window)
        if popularity is None and recommender is not None:  # the newest model's popularity ranking
            popularity = popularity_on_window(recommender, window)
        rows.append({"entry": entry, **result, "seconds": time.perf_counter() - started})
        context.log.info(f"{entry['_id']} ({entry.get('partition_key')}): "
                         + (f"{SCORE_METRIC} {result['score']:.4f}" if result["problem"] is None
                            else f"cannot be scored: {result['problem']}"))
    return rows, popularity


def _record_all(db: Any, window: EvaluationWindow, rows: list[dict[str, Any]], partition_key: str,
                run_id: str) -> None:
    for row in rows:
        entry = row["entry"]
        evaluations.record_evaluation(db, {
            "model_id": str(entry["_id"]), "window_start": window.start, "window_end": window.end,
            "window_partition_key": partition_key, "model_partition_key": entry.get("partition_key"),
            "model_data_end": entry["data_end"], "score": row["score"], "metrics": row.get("metrics"),
            "targets": row.get("targets"), "unknown_targets": row.get("unknown_targets"),
            "users": window.n_users, "problem": row["problem"], "run_id": run_id,
        })


def _leaderboard(window: EvaluationWindow, rows: list[dict[str, Any]], decision: Decision,
                 controls: ControlState) -> dict[str, Any]:
    scored = sorted((r for r in rows if r["score"] is not None), key=lambda r: -r["score"])
    metadata: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: r["entry"]["created_at"]):  # a re-run of an hour: the newer
        if row["score"] is not None:
            metadata[f"score_age_{_age_hours(window, row['entry']):02d}h"] = row["score"]

    def role(model_id: str) -> str:
        marks = ["champion" if model_id == decision.champion_id else "",
                 "pinned" if controls.pin and controls.pin.model_id == model_id else ""]
        return ", ".join(m for m in marks if m)

    table = md_table(
        ["rank", "model", "partition", "data age h", f"comparable {SCORE_METRIC}", "recall@20",
         "unknown targets", "own test score", "own validation score", "role"],
        [(i + 1, str(r["entry"]["_id"]), r["entry"].get("partition_key"), _age_hours(window, r["entry"]),
          r["score"], r["metrics"]["recall@20"], r["unknown_targets"], r["entry"].get("score"),
          r["entry"].get("validation_score") or "", role(str(r["entry"]["_id"])))
         for i, r in enumerate(scored)]
        + [("-", str(r["entry"]["_id"]), r["entry"].get("partition_key"), _age_hours(window, r["entry"]),
            "", "", "", r["entry"].get("score"), "", f"not scored: {r['problem']}")
           for r in rows if r["score"] is None])
    metadata["leaderboard"] = table
    if scored:
        metadata["best_score"] = scored[0]["score"]
        newest = max(scored, key=lambda r: (r["entry"]["data_end"], r["entry"]["created_at"]))
        metadata["newest_model_score"] = newest["score"]
    champion_row = next((r for r in scored if str(r["entry"]["_id"]) == decision.champion_id), None)
    if champion_row is not None:
        metadata["champion_score"] = champion_row["score"]
    return metadata


def controls_metadata(controls: ControlState) -> dict[str, Any]:
    """Pins and bans in force, and the latest operator actions (with time and reason)."""
    rows = [(a.at.isoformat(), a.action, a.model_id or "", a.reason) for a in controls.history[:20]]
    return {
        "pinned_model": controls.pin.model_id if controls.pin else "none",
        "banned_models": len(controls.bans),
        "operator_actions": md_table(["at (UTC)", "action", "model", "reason"],
                                     rows or [("-", "none", "", "")]),
    }


@hourly_asset(
    kinds={"pytorch", "mongodb"},
    deps=[dg.AssetDep("model_registry_entry",
                      partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1))],
    description="Comparable scores: every fresh model trained before this hour (and the champion) scored "
                "on the stars given during this hour, by users with earlier stars; then the champion "
                "decision on those scores. Recorded in MongoDB `evaluations` and `champions`.",
)
def model_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, mongo: MongoResource,
                     artifact_store: ArtifactStoreResource, run_defaults: RunDefaults
                     ) -> dg.MaterializeResult:
    started = time.perf_counter()
    policy = run_defaults.selection_policy()  # BATCHREC_MODEL_MAX_AGE_HOURS, BATCHREC_SCORE_TIE_TOLERANCE
    start, end = partition_window(context.partition_key)
    db = mongo.get_database()
    for ensure in (evaluations.ensure_indexes, champions.ensure_indexes):
        ensure(db)
    window = read_window(db, start, end, min_history=config.min_history, max_users=config.max_users,
                         seed=partition_seed(context.partition_key))
    read_seconds = time.perf_counter() - started
    controls = current_controls(db)
    entries = champions.candidates_for(db, window.start, policy, max_candidates=config.max_candidates,
                                       banned=controls.banned)
    metadata: dict[str, Any] = {**window.counts, "candidates": len(entries), **window_metadata(start, end)}
    rows: list[dict[str, Any]] = []
    if window.n_users < config.min_users:
        context.log.warning(f"{window.n_users} users in the window, fewer than min_users {config.min_users}: "
                            "nothing is scored or promoted on it")
        decision = champions.decide_and_record(db, policy, now=datetime.now(UTC))
        metadata["skipped"] = f"{window.n_users} users < min_users {config.min_users}"
    else:
        scoring_started = time.perf_counter()
        rows, popularity = _score_all(context, artifact_store.get_store(), window, entries)
        metadata["scoring_seconds"] = time.perf_counter() - scoring_started
        _record_all(db, window, rows, context.partition_key, context.run.run_id)
        decision = champions.decide_and_record(db, policy, now=datetime.now(UTC), window_end=end)
        metadata.update(_leaderboard(window, rows, decision, controls))
        metadata["not_scored"] = sum(1 for r in rows if r["score"] is None)
        if popularity is not None:
            metadata["popularity_score"] = popularity["score"]
    context.log.info(f"champion {decision.champion_id} ({'promoted' if decision.promoted else 'kept'}): "
                     f"{decision.reason}; serving {decision.serve_id} ({decision.serve_reason})")
    metadata.update({
        "champion": decision.champion_id or "none", "champion_reason": decision.reason,
        "promoted": decision.promoted, "serving": decision.serve_id or "none",
        "serving_reason": decision.serve_reason, **controls_metadata(controls),
        "window_read_seconds": read_seconds, "evaluation_seconds": time.perf_counter() - started,
    })
    return dg.MaterializeResult(metadata=metadata)
