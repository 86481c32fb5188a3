"""Settings: one typed object, read from the environment, with one clear line per bad variable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from batchrec_dagster.settings import PROJECT_ROOT, SettingsError, env_names, get_settings, load_settings


def test_defaults_without_any_variable() -> None:
    s = load_settings({})
    assert (s.deployment, s.mongodb_database, s.mongo_port, s.source_layout) == ("local", "batchrec", 27117,
                                                                                 "stars")
    assert (s.schedule_minute_offset, s.new_stars_threshold, s.freshness_hours) == (5, 1000, 3.0)
    assert s.home == (PROJECT_ROOT / ".batchrec").resolve() and s.artifacts_dir == s.home / "storage"


def test_values_are_parsed_and_normalised() -> None:
    s = load_settings({"BATCHREC_DEPLOYMENT": " Local ", "BATCHREC_SCHEDULE_MINUTE_OFFSET": " 59 ",
                       "GCS_PREFIX": "/team-a/", "BATCHREC_FRESHNESS_HOURS": "0.5",
                       "BATCHREC_MONGO_PORT": ""})
    assert (s.deployment, s.schedule_minute_offset, s.gcs_prefix, s.freshness_hours, s.mongo_port) == (
        "local", 59, "team-a", 0.5, 27117)


@pytest.mark.parametrize("variable,value", [
    ("BATCHREC_SCHEDULE_MINUTE_OFFSET", "60"), ("BATCHREC_SCHEDULE_MINUTE_OFFSET", "five"),
    ("BATCHREC_FRESHNESS_HOURS", "0.001"), ("BATCHREC_NEW_STARS_THRESHOLD", "0"),
    ("BATCHREC_DEPLOYMENT", "staging"), ("BATCHREC_PARTITIONS_START", "2026-01-01"),
    ("BATCHREC_SOURCE_LAYOUT", "nested"), ("BATCHREC_MAX_MATRIX_DENSITY", "2"),
])
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


def test_prod_needs_its_services_and_hides_the_uri() -> None:
    with pytest.raises(SettingsError, match="MONGODB_URI, GCS_BUCKET"):
        load_settings({"BATCHREC_DEPLOYMENT": "prod"})
    secret = "mongodb://user:pw@db.example/x"
    s = load_settings({"BATCHREC_DEPLOYMENT": "prod", "MONGODB_URI": secret, "GCS_BUCKET": "b"})
    assert s.mongodb_uri == secret and "pw@" not in repr(s)


def test_read_once_per_process(monkeypatch: pytest.MonkeyPatch, fresh_settings: None) -> None:
    monkeypatch.setenv("BATCHREC_NEW_STARS_THRESHOLD", "7")
    first = get_settings()
    monkeypatch.setenv("BATCHREC_NEW_STARS_THRESHOLD", "8")
    assert get_settings() is first and first.new_stars_threshold == 7


def test_every_variable_is_documented() -> None:
    table = (PROJECT_ROOT / "docs" / "settings.md").read_text()
    missing = [name for name in env_names().values() if f"`{name}`" not in table]
    assert not missing, f"docs/settings.md lacks {missing}"


def test_index_search_defaults_are_the_librarys() -> None:
    """The settings repeat recvae.ann's query defaults (settings.py does not import torch, which
    recvae.ann needs): they must not drift apart."""
    from recvae import ann

    defaults = load_settings({})
    assert (defaults.ann_nprobe, defaults.ann_ef_search) == (ann.IVF_NPROBE, ann.HNSW_EF_SEARCH)


def test_no_module_but_settings_reads_the_environment() -> None:
    package = PROJECT_ROOT / "batchrec_dagster"
    readers = []
    for path in package.rglob("*.py"):
        if path.name == "settings.py" and path.parent == package:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                readers.append(f"{Path(path).relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert not readers, f"os.environ outside settings.py: {readers}"
