"""train_warm: what a warm hour trains (focus + replay users), what it keeps, and that it learns."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae import RecVAEConfig, Split, WarmConfig, train_recvae, train_warm
from recvae.continual import epoch_schedule, fit_new_item_rows, focus_users, parent_validation_ndcg
from recvae.train import EpochReport, _accept_last
from recvae.warm import map_vocabulary, warm_start

TINY = RecVAEConfig(hidden_dim=32, latent_dim=8, batch_size=64, epochs=3, seed=5)


@pytest.fixture(scope="module")
def hour(small_split: Split) -> dict:
    """A model trained without the last 10 items (the 'new' repositories) and the full hour."""
    n_items = small_split.train.shape[1]
    old_cols = np.arange(n_items - 10)
    old = small_split.train[:, old_cols]
    previous = train_recvae(old, _columns(small_split, old_cols), replace(TINY, epochs=4), device="cpu")
    return {"previous": previous.model, "previous_ids": small_split.item_ids[old_cols], "split": small_split}


def _columns(split: Split, cols: np.ndarray):  # noqa: ANN202
    from recvae import HeldOut

    v = split.validation
    return HeldOut(v.user_ids, v.fold_in[:, cols], v.target[:, cols])


def test_a_warm_hour_with_new_stars_changes_the_weights_and_trains_the_new_rows(hour: dict) -> None:
    split = hour["split"]
    changed = np.arange(0, split.train.shape[0], 7)
    out = train_warm(hour["previous"], hour["previous_ids"], split.train, split.item_ids, split.validation,
                     TINY, changed_users=changed, device="cpu")
    report = out.report
    assert report.weights_changed and report.kept_epoch >= 1
    assert report.new_items == 10 and report.new_items_trained == 10
    new = torch.from_numpy(map_vocabulary(hour["previous_ids"], split.item_ids).previous_index < 0)
    assert (out.training.model.decoder.weight[new].abs().sum(1) > 0).all()
    # the starting model is scored but never returned; the report scores the previous model as it
    # would serve this hour (mapped, new items at their popularity: no placed rows, no shrink)
    assert out.training.initial_metrics["ndcg@100"] > 0
    assert report.initial_validation_ndcg == parent_validation_ndcg(
        hour["previous"], hour["previous_ids"], split.item_ids, split.validation, split.train)
    assert report.validation_ndcg == out.training.best_metrics["ndcg@100"]
    assert report.validation_ndcg_se > 0


def test_the_last_epoch_is_kept_unless_it_fell_by_more_than_its_standard_error(hour: dict) -> None:
    def reports(*ndcgs: float) -> list[EpochReport]:
        return [EpochReport(i + 1, 1.0, 0.0, n, 0.0, 0.0, False) for i, n in enumerate(ndcgs)]

    history = reports(0.30, 0.34, 0.33)
    assert _accept_last(history, history[1], last_se=0.02)        # fell 0.01 < SE: keep the last
    assert not _accept_last(history, history[1], last_se=0.005)   # fell 0.01 > SE: keep epoch 2
    # in a real run the starting model (epoch 0) is never what comes back, even when it scores best
    split = hour["split"]
    start, _ = warm_start(hour["previous"], hour["previous_ids"], split.item_ids, train=split.train)
    result = train_recvae(split.train, split.validation, replace(TINY, epochs=2), device="cpu",
                          initial_model=start, keep="last")
    assert result.best_epoch in (1, 2)
    assert result.best_metrics["ndcg@100"] == result.history[result.best_epoch - 1].ndcg_at_100


def test_focus_users_are_the_changed_users_and_every_user_of_a_new_item() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=np.float32))
    is_new = np.array([False, False, True])
    assert focus_users(train, is_new, np.array([0])).tolist() == [0, 2, 4]
    assert focus_users(train, is_new, np.array([False, True, False, False, False])).tolist() == [1, 2, 4]
    assert focus_users(train, is_new, None).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="outside"):
        focus_users(train, is_new, np.array([5]))


def test_each_epoch_trains_the_focus_users_plus_a_replay_sample_as_documented() -> None:
    focus = np.array([1, 5, 9])
    schedule = epoch_schedule(100, focus, WarmConfig(replay_ratio=2.0, min_epoch_users=0), seed=3)
    first, second = schedule(1), schedule(2)
    for rows in (first, second):
        assert set(focus) <= set(rows.tolist()) and len(rows) == 3 + 6 and len(set(rows.tolist())) == 9
    assert not np.array_equal(first, second)          # a fresh replay sample each epoch
    assert np.array_equal(schedule(1), first)         # and the same one on a rerun
    # min_epoch_users tops the replay up; it never exceeds the users there are
    assert len(epoch_schedule(100, focus, WarmConfig(replay_ratio=0.0, min_epoch_users=40), 0)(1)) == 40
    assert len(epoch_schedule(10, focus, WarmConfig(replay_ratio=5.0), 0)(1)) == 10


def test_training_on_every_row_through_epoch_users_is_plain_training(small_split: Split) -> None:
    """The per-epoch user lists reuse the full scheme exactly: same rows, same weights."""
    config = replace(TINY, epochs=2)
    plain = train_recvae(small_split.train, small_split.validation, config, device="cpu")
    n = small_split.train.shape[0]
    listed = train_recvae(small_split.train, small_split.validation, config, device="cpu",
                 epoch_users=lambda epoch: np.arange(n))
    after = listed.model.state_dict()
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, after[name]), name


def test_new_rows_are_placed_by_the_kept_items_map(hour: dict) -> None:
    split = hour["split"]
    model, _ = warm_start(hour["previous"], hour["previous_ids"], split.item_ids, train=split.train)
    is_new = map_vocabulary(hour["previous_ids"], split.item_ids).previous_index < 0
    assert model.decoder.weight[torch.from_numpy(is_new)].abs().sum() == 0
    kept_before = model.decoder.weight[torch.from_numpy(~is_new)].clone()
    r2 = fit_new_item_rows(model, is_new, split.train)
    assert np.isfinite(r2) and r2 <= 1.0
    assert (model.decoder.weight[torch.from_numpy(is_new)].abs().sum(1) > 0).all()
    assert torch.equal(model.decoder.weight[torch.from_numpy(~is_new)], kept_before)


def test_shrink_scales_the_starting_weight_matrices_and_leaves_the_previous_model_alone(hour: dict) -> None:
    split = hour["split"]
    before = {k: v.clone() for k, v in hour["previous"].state_dict().items()}
    one = replace(TINY, epochs=1)
    plain = train_warm(hour["previous"], hour["previous_ids"], split.train, split.item_ids, split.validation,
                       one, device="cpu", warm=WarmConfig(fit_new_rows=False))
    shrunk = train_warm(hour["previous"], hour["previous_ids"], split.train, split.item_ids, split.validation,
                        one, device="cpu", warm=WarmConfig(fit_new_rows=False, shrink=0.5))
    # the start differs (epoch 0 is scored on it), the caller's model and the parent's score do not
    assert shrunk.training.initial_metrics["ndcg@100"] != plain.training.initial_metrics["ndcg@100"]
    assert shrunk.report.initial_validation_ndcg == plain.report.initial_validation_ndcg
    assert all(torch.equal(v, hour["previous"].state_dict()[k]) for k, v in before.items())
    start, _ = warm_start(hour["previous"], hour["previous_ids"], split.item_ids, train=split.train)
    from recvae.continual import _shrunk

    halved = _shrunk(start, 0.5)
    assert torch.allclose(halved.decoder.weight, 0.5 * start.decoder.weight)
    assert torch.equal(halved.decoder.bias, start.decoder.bias)  # biases and norms are kept
    with pytest.raises(ValueError, match="shrink"):
        WarmConfig(shrink=0.0)
