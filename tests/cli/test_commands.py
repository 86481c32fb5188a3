"""`batchrec` commands in-process, local deployment, against the test MongoDB."""

import os
from pathlib import Path

import dagster as dg
import pytest

from batchrec_dagster.cli.commands import build_parser, main
from batchrec_dagster.cli.materialize import prepare_dagster_home
from batchrec_dagster.defs.instance.run_queue import PoolLimitQueuedRunCoordinator
from batchrec_dagster.settings import PROJECT_ROOT, get_settings

TINY = ["--users", "300", "--repos", "300"]
# 20 epochs: scored on held-out test users (not the epoch-picking validation users), 6 epochs on the
# ~180 training users lost to popularity on 3 of 4 data draws (margin -0.07..+0.003); 20: +0.12..+0.24
TINY_TRAINING = ["--epochs", "20", "--hidden-dim", "128", "--latent-dim", "32", "--learning-rate", "2e-3"]


@pytest.mark.slow
def test_demo_then_registry_and_recommend(local_env: Path, mongo_db, capsys):
    assert main(["demo", *TINY, *TINY_TRAINING]) == 0
    out = capsys.readouterr().out
    assert "demo data loaded: 300 repositories, 300 users" in out
    assert "Registered model:" in out and "score (NDCG@100)" in out
    assert "Top-10 for user demo-user-0" in out and " 10. demo-" in out
    assert "full read (no snapshot of the previous hour); full training (no registered" in out
    artifacts = list((local_env / "storage" / "models").glob("recvae_*.pt"))
    assert len(artifacts) == 1
    copied = (local_env / "dagster_home" / "dagster.yaml").is_file()
    assert copied == (PROJECT_ROOT / "dagster.yaml").is_file()

    assert main(["load-demo", *TINY]) == 0
    assert "already loaded" in capsys.readouterr().out

    assert main(["registry"]) == 0
    listing = capsys.readouterr().out
    assert "* " in listing and artifacts[0].name in listing

    assert main(["recommend", "--user", "demo-user-3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()[:3].strip(". ").isdigit()]
    assert len(lines) == 10 and all("demo-" in line for line in lines)

    repo = mongo_db.repositories.find_one({}, sort=[("stars", -1)])
    assert main(["recommend", "--repos", f"{repo['_id']},{repo['full_name']}", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 starred repositories known" in out and repo["full_name"] not in out.split("):", 1)[1]

    assert main(["recommend", "--user", "nobody-here"]) == 1
    assert "no user with login 'nobody-here'" in capsys.readouterr().err


def test_recommend_without_a_fresh_model_is_a_clear_error(local_env: Path, mongo_db, capsys):
    assert main(["recommend", "--user", "demo-user-0"]) == 1
    assert "no model trained on data from the last" in capsys.readouterr().err


def test_prod_without_its_settings_is_a_clear_error(local_env: Path, monkeypatch, capsys):
    monkeypatch.delenv("GCS_BUCKET", raising=False)
    assert main(["--deployment", "prod", "registry"]) == 1
    assert "GCS_BUCKET" in capsys.readouterr().err


def test_dagster_home_gets_the_repository_dagster_yaml(local_env: Path):
    home = prepare_dagster_home(get_settings())
    assert home == local_env / "dagster_home" and os.environ["DAGSTER_HOME"] == str(home)
    if (PROJECT_ROOT / "dagster.yaml").is_file():
        assert (home / "dagster.yaml").read_text() == (PROJECT_ROOT / "dagster.yaml").read_text()


def test_an_exported_dagster_home_without_dagster_yaml_gets_the_training_pool(
        local_env: Path, tmp_path: Path, monkeypatch, capsys):
    """Issue 18, D7: with DAGSTER_HOME exported (as the README suggests) and no dagster.yaml in it,
    Dagster ran with no run queue and no pool limit, and two training runs trained at once."""
    exported = tmp_path / "exported_home"
    monkeypatch.setenv("DAGSTER_HOME", str(exported))
    get_settings.cache_clear()
    assert prepare_dagster_home(get_settings()) == exported  # what `batchrec dev` and `materialize` call
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and said[0].startswith(f"DAGSTER_HOME {exported} had no dagster.yaml: copied"), said
    with dg.DagsterInstance.get() as instance:  # the instance every Dagster process there opens
        assert instance.root_directory == str(exported)
        assert isinstance(instance.run_coordinator, PoolLimitQueuedRunCoordinator)
        pools = instance.get_concurrency_config().pool_config
        assert (pools.default_pool_limit, pools.pool_granularity.value) == (1, "run")

    assert prepare_dagster_home(get_settings()) == exported  # once there, it is left as it is
    assert capsys.readouterr().out == ""


def test_the_default_dagster_home_exported_keeps_the_repository_dagster_yaml(
        local_env: Path, monkeypatch, capsys):
    """`export DAGSTER_HOME=$PWD/.batchrec/dagster_home` (the README's line) names batchrec's own
    folder: its dagster.yaml follows the repository's, as when DAGSTER_HOME is not set."""
    home = local_env / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # an older copy
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    get_settings.cache_clear()
    assert prepare_dagster_home(get_settings()) == home
    assert (home / "dagster.yaml").read_text() == (PROJECT_ROOT / "dagster.yaml").read_text()
    assert capsys.readouterr().out == ""


def test_an_operators_own_dagster_yaml_is_kept_and_a_missing_pool_limit_is_said(
        local_env: Path, tmp_path: Path, monkeypatch, capsys):
    exported = tmp_path / "operators_home"
    exported.mkdir()
    own = "telemetry:\n  enabled: false\n"
    (exported / "dagster.yaml").write_text(own)
    monkeypatch.setenv("DAGSTER_HOME", str(exported))
    get_settings.cache_clear()
    prepare_dagster_home(get_settings())
    assert (exported / "dagster.yaml").read_text() == own
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and "sets no pool limit" in said[0], said

    (exported / "dagster.yaml").write_text(own + "concurrency:\n  pools:\n    default_limit: 2\n")
    prepare_dagster_home(get_settings())
    assert capsys.readouterr().out == ""


def test_every_command_is_wired():
    parser = build_parser()
    for argv in (["demo"], ["load-demo"], ["import-csv", "x.csv"], ["materialize", "--partition", "k"],
                 ["registry"], ["recommend", "--user", "u"], ["dev"], ["stop"], ["serve"],
                 ["prod-stack"], ["settings"]):
        assert callable(parser.parse_args(argv).func), argv
