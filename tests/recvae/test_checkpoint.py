"""Adam's moments: round trip through bytes, refusal of bad bytes, mapping to a new vocabulary,
and a warm run that continues them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from recvae import RecVAEConfig, Split, train_recvae, train_warm
from recvae.checkpoint import CheckpointError, OptimizerMoments, dump_checkpoint, load_checkpoint
from recvae.data import HeldOut
from recvae.train import _Trainer

TINY = RecVAEConfig(hidden_dim=32, latent_dim=8, batch_size=64, epochs=2, seed=3)


@pytest.fixture(scope="module")
def trained(small_split: Split) -> dict:
    old_cols = np.arange(small_split.train.shape[1] - 10)
    v = small_split.validation
    validation = HeldOut(v.user_ids, v.fold_in[:, old_cols], v.target[:, old_cols])
    result = train_recvae(small_split.train[:, old_cols], validation, TINY, device="cpu")
    return {"result": result, "previous_ids": small_split.item_ids[old_cols], "split": small_split}


def test_a_run_returns_the_moments_of_every_parameter_and_they_round_trip(trained: dict) -> None:
    result = trained["result"]
    moments = result.moments
    params = dict(result.model.named_parameters())
    assert set(moments.exp_avg) == set(params)
    steps_per_pass = -(-trained["split"].train.shape[0] // TINY.batch_size)
    assert moments.steps["decoder.weight"] == TINY.epochs * TINY.decoder_passes * steps_per_pass
    assert moments.steps["encoder.input_weight"] == TINY.epochs * TINY.encoder_passes * steps_per_pass
    assert all(moments.exp_avg_sq[k].min() >= 0 for k in params)
    back = load_checkpoint(dump_checkpoint(moments))
    assert back.steps == moments.steps
    for name in params:
        assert torch.equal(back.exp_avg[name], moments.exp_avg[name])
        assert torch.equal(back.exp_avg_sq[name], moments.exp_avg_sq[name])


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "artifact"])
def test_damaged_or_foreign_bytes_are_refused_with_a_checkpoint_error(trained: dict, damage: str) -> None:
    data = bytearray(dump_checkpoint(trained["result"].moments))
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[-5] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    else:
        from recvae import Recommender, dump_artifact

        ids = trained["previous_ids"]
        rec = Recommender(trained["result"].model, ids, np.ones(len(ids)))
        data = bytearray(dump_artifact(rec, config=TINY, metrics={}))
    with pytest.raises(CheckpointError):
        load_checkpoint(bytes(data))


def test_moments_follow_the_vocabulary_like_the_weights(trained: dict) -> None:
    moments, prev_ids, split = trained["result"].moments, trained["previous_ids"], trained["split"]
    # the newest vocabulary drops the first 3 old items and adds the 10 withheld ones
    new_ids = split.item_ids[3:]
    mapped = moments.for_vocabulary(prev_ids, new_ids)
    for name in ("encoder.input_weight", "decoder.weight", "decoder.bias"):
        assert mapped.exp_avg[name].shape[0] == len(new_ids)
        assert torch.equal(mapped.exp_avg[name][: len(prev_ids) - 3], moments.exp_avg[name][3:])
        assert not mapped.exp_avg_sq[name][len(prev_ids) - 3 :].any()  # new items: zero moments
    assert torch.equal(mapped.exp_avg["encoder.fc_mu.weight"],
                       moments.exp_avg["encoder.fc_mu.weight"])


def test_moments_that_do_not_fit_the_model_are_refused(trained: dict) -> None:
    moments, model = trained["result"].moments, trained["result"].model
    short = OptimizerMoments({k: v for k, v in moments.exp_avg.items() if k != "decoder.bias"},
                             moments.exp_avg_sq, moments.steps)
    with pytest.raises(CheckpointError, match="parameters"):
        short.check_fits(model)
    other = trained["split"].item_ids  # 10 more items than the model has
    with pytest.raises(CheckpointError, match="shape"):
        moments.for_vocabulary(trained["previous_ids"], other).check_fits(model)


def test_carried_moments_are_the_optimisers_state_when_training_continues(trained: dict) -> None:
    result, split = trained["result"], trained["split"]
    old_cols = np.arange(split.train.shape[1] - 10)
    train = split.train[:, old_cols].tocsr()
    trainer = _Trainer(train, TINY, torch.device("cpu"), result.model, result.moments)
    state = trainer.opt_decoder.state[trainer.model.decoder.weight]
    assert float(state["step"]) == result.moments.steps["decoder.weight"]
    assert torch.equal(state["exp_avg_sq"], result.moments.exp_avg_sq["decoder.weight"])


def test_a_warm_hour_carries_the_moments_and_says_so(trained: dict) -> None:
    result, split = trained["result"], trained["split"]
    args = (result.model, trained["previous_ids"], split.train, split.item_ids, split.validation,
            replace(TINY, epochs=1))
    carried = train_warm(*args, moments=result.moments, device="cpu")
    fresh = train_warm(*args, device="cpu")
    assert carried.report.optimizer_moments == "carried" and fresh.report.optimizer_moments == "fresh"
    # the step count goes on from the previous run's
    assert carried.training.moments.steps["decoder.weight"] > fresh.training.moments.steps["decoder.weight"]
    assert not torch.equal(carried.training.model.decoder.weight, fresh.training.model.decoder.weight)
