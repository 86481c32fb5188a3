"""How the CLI prints registry entries and recommendations.

Registry documents come from a database other tools write to as well, so every field is
formatted defensively: a missing or ill-typed value prints as `?`, never as a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from batchrec_dagster.cli.recommend import Recommendations


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


def _evaluation_text(evaluation: Mapping[str, Any] | None) -> str:
    if not evaluation:
        return "not yet"
    if evaluation.get("problem"):
        return "failed"
    return f"{_num(evaluation.get('score'))} @{_text(evaluation.get('window_partition_key'))[5:]}"


def _role(model_id: str, served: Mapping[str, Any] | None, champion: Mapping[str, Any] | None,
          controls: Any) -> str:
    roles = []
    if champion is not None and champion.get("model_id") == model_id:
        roles.append("champion")
    if controls.pin is not None and controls.pin.model_id == model_id:
        roles.append("pinned")
    if model_id in controls.bans:
        roles.append("banned")
    if served is not None and str(served.get("_id")) == model_id and not roles:
        roles.append(served["selection"]["role"])
    return ",".join(roles)


def print_registry(entries: list[Mapping[str, Any]], served: Mapping[str, Any] | None,
                   champion: Mapping[str, Any] | None, controls: Any,
                   comparable: Mapping[str, Mapping[str, Any]], max_age_hours: float) -> None:
    """One line per model: id, when, partition, own scores, newest comparable score, role."""
    print(f"{'':2}{'model id':<24} {'created (UTC)':<19} {'partition':<16} {'test':>6} {'valid':>6} "
          f"{'comparable @window':<20} {'role':<9} file")
    served_id = str(served.get("_id")) if served is not None else None
    for e in entries:
        model_id = str(e.get("_id"))
        mark = "* " if model_id == served_id else "  "
        role = _role(model_id, served, champion, controls)
        print(f"{mark}{model_id:<24} {_time(e.get('created_at')):<19} {_text(e.get('partition_key'), 16)} "
              f"{_num(e.get('score')):>6} {_num(e.get('validation_score')):>6} "
              f"{_evaluation_text(comparable.get(model_id)):<20} {role:<9} {_text(e.get('file_name'))}")
    print(f"\n* = served now. test: NDCG@100 on the model's own held-out test users; valid: on the users "
          f"that chose its epoch. Neither compares across hours. comparable: NDCG@100 on the newest "
          f"evaluation window (@hour) it was scored on: only scores of the same window compare. Models "
          f"whose data is older than {max_age_hours:g} h are never served.")


def print_selection(served: Mapping[str, Any] | None, champion: Mapping[str, Any] | None,
                    controls: Any) -> None:
    """The champion, what serves and why, the pin and the bans (with time and reason)."""
    if champion is None:
        print("\nchampion: none")
    else:
        partition = _text(champion.get("model_partition_key"))
        print(f"\nchampion: {champion.get('model_id')} (partition {partition}) "
              f"since {_time(champion.get('promoted_at'))} UTC: {_text(champion.get('reason'))}")
    if served is None:
        print("serving:  no model can be served (none fresh, unbanned and verified)")
    else:
        selection = served["selection"]
        print(f"serving:  {served.get('_id')} ({selection['role']}): {selection['reason']}")
    pin = controls.pin
    print(f"pinned:   {pin.model_id} since {_time(pin.at)} UTC: {pin.reason or 'no reason given'}"
          if pin else "pinned:   none")
    if not controls.bans:
        print("banned:   none")
    for model_id, ban in controls.bans.items():
        print(f"banned:   {model_id} since {_time(ban.at)} UTC: {ban.reason or 'no reason given'}")


def print_recommendations(result: Recommendations, who: str) -> None:
    for reason in result.passed_over:
        print(f"passed over a better-ranked model that failed: {reason}")
    if result.unknown_repos:
        print(f"unknown repositories, ignored: {', '.join(map(repr, result.unknown_repos))}")
    print(f"Top-{len(result.rows)} for {who} ({result.known_items} of {result.input_items} starred "
          f"repositories known to model {_text(result.entry.get('file_name'))}):")
    for row in result.rows:
        print(f"  {row['rank']:>2}. {row['full_name']:<48} (repo {row['repo_id']}, score {row['score']:.3f})")
