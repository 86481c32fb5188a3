"""How the CLI prints registry entries and recommendations.

Registry documents come from a database other tools write to as well, so every field is
formatted defensively: a missing or ill-typed value prints as `?`, never as a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from batchrec_dagster.recommend import Recommendations


def _num(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def _text(value: Any, width: int = 0) -> str:
    text = value if isinstance(value, str) else "?"
    return f"{text:<{width}}" if width else text


def _time(value: Any) -> str:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return "?"


def _get(entry: Mapping[str, Any], *path: str) -> Any:
    value: Any = entry
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def print_entry(entry: Mapping[str, Any], *, title: str) -> None:
    pop = _get(entry, "popularity_metrics", "ndcg@100")
    sizes = entry.get("data_sizes") if isinstance(entry.get("data_sizes"), Mapping) else {}
    print(title)
    print(f"  _id          {entry.get('_id')}")
    print(f"  model        {_text(entry.get('model_kind'))}  score (NDCG@100) {_num(entry.get('score'))}"
          f"  vs popularity {_num(pop)}")
    print(f"  recall@20/50 {_num(_get(entry, 'metrics', 'recall@20'))} / "
          f"{_num(_get(entry, 'metrics', 'recall@50'))}")
    print(f"  artifact     {_text(entry.get('uri') or entry.get('file_name'))}  "
          f"({_num(entry.get('size_bytes'), 'd')} bytes, sha256 {_text(entry.get('sha256'))[:16]}...)")
    print(f"  data         partition {_text(entry.get('partition_key'))}: [{_time(entry.get('data_start'))}, "
          f"{_time(entry.get('data_end'))}) UTC; {sizes.get('users', '?')} users x "
          f"{sizes.get('items', '?')} repositories, {sizes.get('nonzeros', '?')} stars")
    print(f"  training     {entry.get('epochs', '?')} epochs, {_num(entry.get('training_seconds'), '.1f')}s; "
          f"run {_text(entry.get('run_id'))}; created {_time(entry.get('created_at'))} UTC; "
          f"code {_text(entry.get('code_version'))}")


def print_registry(entries: list[Mapping[str, Any]], served_id: Any, max_age_hours: float) -> None:
    print(f"{'':2}{'created (UTC)':<20} {'partition':<17} {'score':>7} {'popular':>7}  {'file':<48} run")
    for e in entries:
        mark = "* " if served_id is not None and e.get("_id") == served_id else "  "
        print(f"{mark}{_time(e.get('created_at')):<19} {_text(e.get('partition_key'), 17)} "
              f"{_num(e.get('score')):>7} {_num(_get(e, 'popularity_metrics', 'ndcg@100')):>7}  "
              f"{_text(e.get('file_name'), 48)} {_text(e.get('run_id'))[:8]}")
    print("\n* = selected for serving: highest score among models whose data_end is within "
          f"{max_age_hours:g} h; a tie goes to the newest.")


def print_recommendations(result: Recommendations, who: str) -> None:
    for reason in result.passed_over:
        print(f"passed over a better-ranked model that failed: {reason}")
    print(f"Top-{len(result.rows)} for {who} ({result.known_items} of {result.input_items} starred "
          f"repositories known to model {_text(result.entry.get('file_name'))}):")
    for row in result.rows:
        print(f"  {row['rank']:>2}. {row['full_name']:<48} (repo {row['repo_id']}, score {row['score']:.3f})")
