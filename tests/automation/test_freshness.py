"""The freshness policy: its window from the environment, and that it lands on model_registry_entry."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from batchrec_dagster.freshness import apply_model_freshness, freshness_window, model_freshness_policy
from tests.automation.stubs import stub_assets


def test_window_from_the_environment() -> None:
    assert freshness_window({}) == timedelta(hours=3)
    assert freshness_window({"BATCHREC_FRESHNESS_HOURS": "0.5"}) == timedelta(minutes=30)
    for bad in ("soon", "0.001"):
        with pytest.raises(ValueError, match="BATCHREC_FRESHNESS_HOURS"):
            freshness_window({"BATCHREC_FRESHNESS_HOURS": bad})


def test_policy_warns_an_hour_before_it_fails() -> None:
    policy = model_freshness_policy(timedelta(hours=3))
    assert policy.fail_window.to_timedelta() == timedelta(hours=3)
    assert policy.warn_window.to_timedelta() == timedelta(hours=2)
    # a window of an hour or less leaves no room for a warning
    assert model_freshness_policy(timedelta(minutes=45)).warn_window is None


def test_only_the_registry_entry_gets_the_policy() -> None:
    policy = model_freshness_policy(timedelta(hours=2))
    graph = dg.Definitions(assets=apply_model_freshness(stub_assets(), policy)).resolve_asset_graph()
    policies = {key.to_user_string(): graph.get(key).freshness_policy for key in graph.get_all_asset_keys()}
    assert policies.pop("model_registry_entry") == policy
    assert set(policies.values()) == {None}
