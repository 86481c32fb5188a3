"""The freshness policy: its window from the settings, and that it is declared on model_registry_entry."""

from __future__ import annotations

from datetime import timedelta

from batchrec_dagster.defs.automation.freshness import freshness_window, model_freshness_policy
from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.settings import load_settings


def test_window_from_the_settings() -> None:
    assert freshness_window(load_settings({})) == timedelta(hours=3)
    assert freshness_window(load_settings({"BATCHREC_FRESHNESS_HOURS": "0.5"})) == timedelta(minutes=30)


def test_policy_warns_an_hour_before_it_fails() -> None:
    policy = model_freshness_policy(timedelta(hours=3))
    assert policy.fail_window.to_timedelta() == timedelta(hours=3)
    assert policy.warn_window.to_timedelta() == timedelta(hours=2)
    # a window of an hour or less leaves no room for a warning
    assert model_freshness_policy(timedelta(minutes=45)).warn_window is None


def test_only_the_registry_entry_declares_the_policy() -> None:
    settings = load_settings({"BATCHREC_FRESHNESS_HOURS": "5"})
    graph = build_definitions(settings).resolve_asset_graph()
    policies = {key.to_user_string(): graph.get(key).freshness_policy for key in graph.get_all_asset_keys()}
    assert policies.pop("model_registry_entry") == model_freshness_policy(timedelta(hours=5))
    assert set(policies.values()) == {None}
