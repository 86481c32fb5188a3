"""The freshness policy: its window from the settings, and that it is declared on model_registry_entry."""

from __future__ import annotations

from datetime import timedelta

from batchrec_dagster.defs.automation.freshness import freshness_window, model_freshness_policy
from batchrec_dagster.defs.definitions import build_definitions
from batchrec_dagster.settings import get_settings


def test_window_from_the_settings(monkeypatch) -> None:
    assert freshness_window() == timedelta(hours=3)
    monkeypatch.setenv("BATCHREC_FRESHNESS_HOURS", "0.5")
    get_settings.cache_clear()
    assert freshness_window() == timedelta(minutes=30)


def test_policy_warns_an_hour_before_it_fails() -> None:
    policy = model_freshness_policy(timedelta(hours=3))
    assert policy.fail_window.to_timedelta() == timedelta(hours=3)
    assert policy.warn_window.to_timedelta() == timedelta(hours=2)
    # a window of an hour or less leaves no room for a warning
    assert model_freshness_policy(timedelta(minutes=45)).warn_window is None


def test_only_the_registry_entry_declares_the_policy() -> None:
    graph = build_definitions().resolve_asset_graph()
    policies = {key.to_user_string(): graph.get(key).freshness_policy for key in graph.get_all_asset_keys()}
    assert policies.pop("model_registry_entry") == model_freshness_policy()
    assert set(policies.values()) == {None}
