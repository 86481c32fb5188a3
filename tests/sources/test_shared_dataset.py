"""The real dataset (github-stars-tiny: real GitHub stars, no times) through the whole graph."""

from pathlib import Path

import dagster as dg
import pytest

from batchrec_dagster.cli.materialize import materialize_partition, training_run_config
from batchrec_dagster.defs.partitions import partition_window
from batchrec_dagster.registry.models import entries_for_partition
from batchrec_dagster.settings import Settings
from batchrec_dagster.sources.csv_import import import_csv

KEY = "2026-03-01-20:00"
START, END = partition_window(KEY)
# enough to beat popularity clearly on this data in well under a minute of CPU
TRAINING = {"epochs": 8, "hidden_dim": 256, "latent_dim": 64, "learning_rate": 3e-3, "time_budget_s": 240.0,
            "patience": None}


@pytest.mark.slow
def test_real_stars_train_a_model_that_beats_popularity(shared_dataset: Path, local_settings: Settings,
                                                        mongo_db):
    doc = import_csv(mongo_db, shared_dataset / "stars.csv", shared_dataset / "repos.csv", time_end=START)
    assert doc["stars"] == 311_303 and doc["skipped"] == {"duplicate": 1}   # the README's one duplicate

    # 300 validation and 300 test users: the protocol of benchmarks/bench_recvae.py
    split = {"validation_users": 300, "test_users": 300}
    run_config = training_run_config(TRAINING, extra={"vae_input": split}, log_level="WARNING")
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize_partition(KEY, settings=local_settings, run_config=run_config, instance=instance)
    assert result.success
    [entry] = entries_for_partition(mongo_db, END)
    assert entry["data_sizes"]["users"] == 2105 and entry["data_sizes"]["nonzeros"] == 311_303
    assert entry["metrics"]["users"] == entry["validation_metrics"]["users"] == 300
    assert entry["score"] > 1.2 * entry["popularity_metrics"]["ndcg@100"]
    model = next(e for e in result.get_asset_materialization_events()
                 if e.asset_key == dg.AssetKey("recvae_model"))
    # names are owner/name from repos.csv, not bare indexes
    assert "/" in model.materialization.metadata["top_repositories_preview"].value
