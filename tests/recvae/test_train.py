from __future__ import annotations

import numpy as np
import pytest
import torch

from recvae import (
    EpochReport,
    Interactions,
    Popularity,
    Recommender,
    RecVAEConfig,
    Split,
    evaluate,
    split_users,
    train_recvae,
)

TINY = dict(hidden_dim=32, latent_dim=8, batch_size=64)


def test_training_reports_each_epoch_and_restores_the_best(small_split: Split) -> None:
    reports: list[EpochReport] = []
    val = small_split.validation
    result = train_recvae(
        small_split.train, val, RecVAEConfig(epochs=4, **TINY), device="cpu", on_epoch=reports.append
    )
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert result.history == reports and result.stop_reason == "epochs"
    assert all(np.isfinite(r.loss) and r.seconds > 0 for r in reports)
    best = max(reports, key=lambda r: r.ndcg_at_100)
    assert result.best_epoch == best.epoch and best.best
    assert result.best_metrics["ndcg@100"] == pytest.approx(best.ndcg_at_100)
    assert result.device == "cpu" and not result.model.training
    assert all(p.grad is None for p in result.model.parameters())
    # The returned weights are the best epoch's: re-evaluating reproduces its score.
    pop = Popularity().fit(small_split.train)
    rec = Recommender(result.model, small_split.item_ids, pop.popularity)
    again = evaluate(rec, val.fold_in, val.target)
    assert again["ndcg@100"] == pytest.approx(best.ndcg_at_100, abs=1e-6)


def test_same_seed_same_result_on_cpu(small_split: Split) -> None:
    cfg = RecVAEConfig(epochs=2, seed=5, **TINY)
    a = train_recvae(small_split.train, small_split.validation, cfg, device="cpu")
    b = train_recvae(small_split.train, small_split.validation, cfg, device="cpu")
    assert [r.loss for r in a.history] == [r.loss for r in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = train_recvae(
        small_split.train, small_split.validation, RecVAEConfig(epochs=2, seed=6, **TINY), device="cpu"
    )
    assert not torch.equal(a.model.decoder.weight, c.model.decoder.weight)


def test_patience_stops_when_validation_does_not_improve(small_split: Split) -> None:
    # With a zero learning rate nothing changes, so epoch 1 stays best and patience runs out.
    cfg = RecVAEConfig(epochs=20, patience=2, learning_rate=0.0, **TINY)
    result = train_recvae(small_split.train, small_split.validation, cfg, device="cpu")
    assert result.stop_reason == "patience"
    assert len(result.history) == 3 and result.best_epoch == 1


def test_time_budget_stops_training(small_split: Split) -> None:
    cfg = RecVAEConfig(epochs=20, time_budget_s=0.0, **TINY)
    result = train_recvae(small_split.train, small_split.validation, cfg, device="cpu")
    assert result.stop_reason == "time_budget" and len(result.history) == 1


def test_decoder_only_alternation_variants_run(small_split: Split) -> None:
    cfg = RecVAEConfig(epochs=1, encoder_passes=1, decoder_passes=0, **TINY)
    result = train_recvae(small_split.train, small_split.validation, cfg, device="cpu")
    assert np.isfinite(result.history[0].loss)


def test_mismatched_validation_columns_rejected(small_split: Split) -> None:
    with pytest.raises(ValueError):
        train_recvae(small_split.train[:, :-1], small_split.validation, RecVAEConfig(epochs=1, **TINY))


@pytest.mark.slow
def test_short_run_on_real_data_beats_popularity_widely(github_stars: Interactions) -> None:
    split = split_users(github_stars, n_validation=300, n_test=300, seed=0)
    assert split.test is not None
    pop = Popularity().fit(split.train)
    pop_ndcg = evaluate(pop, split.test.fold_in, split.test.target)["ndcg@100"]
    result = train_recvae(split.train, split.validation, RecVAEConfig(epochs=15), device="cpu")
    rec = Recommender(result.model, split.item_ids, pop.popularity)
    ndcg = evaluate(rec, split.test.fold_in, split.test.target)["ndcg@100"]
    assert pop_ndcg > 0.05
    assert ndcg > 1.3 * pop_ndcg, (ndcg, pop_ndcg)
