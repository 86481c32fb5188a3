"""Warm start: the vocabulary mapping, the compatibility check, and training from a previous model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae import (
    HeldOut,
    IncompatibleModelError,
    Interactions,
    Popularity,
    Recommender,
    RecVAE,
    RecVAEConfig,
    Split,
    build_interactions,
    check_compatibility,
    dump_artifact,
    evaluate,
    load_artifact,
    map_vocabulary,
    split_users,
    train_recvae,
    warm_start,
)
from recvae.sparse import SparseBatch
from recvae.train import _Trainer

TINY = RecVAEConfig(hidden_dim=16, latent_dim=4, batch_size=64)
PREVIOUS_IDS = np.array([10, 20, 30, 40, 50])
NEW_IDS = np.array([30, 10, 60, 50, 70])  # kept 30, 10, 50; new 60, 70; dropped 20, 40
KEPT = {0: 2, 1: 0, 3: 4}  # new column -> previous row
NEW = [2, 4]


def _previous_model() -> RecVAE:
    model = RecVAE(len(PREVIOUS_IDS), replace(TINY, seed=7))
    with torch.no_grad():  # trained-looking, distinct per-item parameters (a fresh bias is tiny)
        model.decoder.bias.copy_(torch.linspace(-2.0, 2.0, len(PREVIOUS_IDS)))
    return model


def _train_matrix() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    dense = (rng.random((40, len(NEW_IDS))) < 0.5).astype(np.float32)
    dense[0] = 0  # a user without items: ignored by the mean code
    return sp.csr_matrix(dense)


def test_kept_items_keep_their_weights_exactly_and_dropped_ones_are_gone() -> None:
    previous = _previous_model()
    before = {k: v.clone() for k, v in previous.state_dict().items()}
    model, report = warm_start(previous, PREVIOUS_IDS, NEW_IDS, train=_train_matrix())

    assert (report.kept, report.new, report.dropped) == (3, 2, 2)
    assert report.overlap == pytest.approx(3 / 5) and report.new_item_bias == "log_frequency"
    assert model.n_items == len(NEW_IDS) and model.decoder.weight.shape == (5, 4)
    for new_col, old_row in KEPT.items():
        assert torch.equal(model.encoder.input_weight[new_col], previous.encoder.input_weight[old_row])
        assert torch.equal(model.decoder.weight[new_col], previous.decoder.weight[old_row])
        assert torch.equal(model.decoder.bias[new_col], previous.decoder.bias[old_row])
    # Dropped items (previous rows 1 and 3) left no trace: every row is a kept one or a new one.
    for old_row in (1, 3):
        assert not any(torch.equal(previous.decoder.weight[old_row], r) for r in model.decoder.weight)
        old_column = previous.encoder.input_weight[old_row]
        assert not any(torch.equal(old_column, r) for r in model.encoder.input_weight)
    # Everything that is not per item is copied as is; the previous model is untouched.
    per_item = {"encoder.input_weight", "decoder.weight", "decoder.bias"}
    for name, value in model.state_dict().items():
        if name not in per_item:
            assert torch.equal(value, previous.state_dict()[name]), name
    for name, value in previous.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_new_items_start_with_zero_rows_at_their_log_frequency() -> None:
    train = _train_matrix()
    model, _ = warm_start(_previous_model(), PREVIOUS_IDS, NEW_IDS, train=train)
    for col in NEW:
        assert torch.count_nonzero(model.encoder.input_weight[col]) == 0
        assert torch.count_nonzero(model.decoder.weight[col]) == 0
    # Independently of the implementation: average the full logits over the users with items,
    # read the offset (mean logit - log count) off the kept items, and place new items by it.
    with torch.no_grad():
        logits = model(SparseBatch.from_csr(train[np.diff(train.indptr) > 0], "cpu"))
    log_counts = torch.from_numpy(np.log(np.asarray(train.sum(0)).ravel())).float()
    kept = list(KEPT)
    offset = (logits.mean(0)[kept] - log_counts[kept]).median()
    torch.testing.assert_close(model.decoder.bias[NEW], log_counts[NEW] + offset, atol=1e-5, rtol=0)
    # A zero decoder row: the new item's logit is its bias, the same for every user.
    for col in NEW:
        torch.testing.assert_close(logits[:, col], model.decoder.bias[col].expand(logits.shape[0]))


def test_without_a_matrix_new_items_get_the_mean_kept_bias() -> None:
    previous = _previous_model()
    model, report = warm_start(previous, PREVIOUS_IDS, NEW_IDS)
    assert report.new_item_bias == "mean_kept_bias"
    expected = previous.decoder.bias[list(KEPT.values())].mean()
    torch.testing.assert_close(model.decoder.bias[NEW], expected.expand(len(NEW)))


def test_string_ids_and_bad_vocabularies() -> None:
    vocab = map_vocabulary(np.array(["a/x", "b/y", "c/z"]), np.array(["c/z", "d/w"]))
    assert vocab.previous_index.tolist() == [2, -1] and (vocab.kept, vocab.new, vocab.dropped) == (1, 1, 2)
    with pytest.raises(ValueError, match="duplicate"):
        map_vocabulary(np.array([1, 2, 2]), np.array([1]))
    with pytest.raises(ValueError, match="kind"):
        map_vocabulary(np.array([1, 2]), np.array(["1", "2"]))
    with pytest.raises(ValueError, match="shares no item"):
        warm_start(_previous_model(), PREVIOUS_IDS, np.array([1, 2, 3]))
    with pytest.raises(IncompatibleModelError, match="ids for a model of 5 items"):
        warm_start(_previous_model(), PREVIOUS_IDS[:4], NEW_IDS)
    with pytest.raises(ValueError, match="columns"):
        warm_start(_previous_model(), PREVIOUS_IDS, NEW_IDS, train=_train_matrix()[:, :4])


def test_mismatched_architecture_raises() -> None:
    with pytest.raises(IncompatibleModelError, match="hidden_dim=16.*hidden_dim=32"):
        warm_start(_previous_model(), PREVIOUS_IDS, NEW_IDS, config=replace(TINY, hidden_dim=32))
    with pytest.raises(IncompatibleModelError, match="latent_dim"):
        warm_start(_previous_model(), PREVIOUS_IDS, NEW_IDS, config=replace(TINY, latent_dim=8))


def test_compatibility_says_warm_or_full_and_why() -> None:
    previous = _previous_model()
    ok = check_compatibility(previous, PREVIOUS_IDS, np.array([10, 20, 30, 40, 99]), min_overlap=0.8)
    assert ok.compatible and (ok.kept, ok.new, ok.dropped) == (4, 1, 1) and ok.overlap == pytest.approx(0.8)
    by_default = check_compatibility(previous, PREVIOUS_IDS, np.array([10, 20, 30, 40, 99]))
    assert not by_default.compatible and "below 0.900" in by_default.reason  # DEFAULT_MIN_OVERLAP
    low = check_compatibility(previous, PREVIOUS_IDS, NEW_IDS, min_overlap=0.8)
    assert not low.compatible and "overlap 0.600 is below 0.800" in low.reason
    other = check_compatibility(previous, PREVIOUS_IDS, PREVIOUS_IDS, replace(TINY, hidden_dim=32))
    assert not other.compatible and "architecture mismatch" in other.reason
    wrong_ids = check_compatibility(previous, PREVIOUS_IDS[:3], PREVIOUS_IDS)
    assert not wrong_ids.compatible and "3 ids for a model of 5 items" in wrong_ids.reason
    assert ok.to_dict()["compatible"] is True


def test_train_rejects_an_initial_model_that_does_not_fit(small_split: Split) -> None:
    n_items = small_split.train.shape[1]
    cfg = replace(TINY, epochs=1)
    with pytest.raises(IncompatibleModelError, match="architecture mismatch"):
        train_recvae(
            small_split.train,
            small_split.validation,
            cfg,
            initial_model=RecVAE(n_items, replace(TINY, hidden_dim=8)),
        )
    with pytest.raises(IncompatibleModelError, match="item count mismatch"):
        train_recvae(small_split.train, small_split.validation, cfg, initial_model=RecVAE(n_items + 1, TINY))


def test_initial_model_is_epoch_zero_and_left_untouched(small_split: Split) -> None:
    initial = RecVAE(small_split.train.shape[1], replace(TINY, seed=3))
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    # Learning rate 0: no epoch can beat the starting point, so it is what comes back.
    cfg = replace(TINY, epochs=5, patience=2, learning_rate=0.0)
    result = train_recvae(small_split.train, small_split.validation, cfg, device="cpu", initial_model=initial)
    assert result.initial_metrics is not None and result.best_epoch == 0
    assert result.best_metrics == result.initial_metrics and result.stop_reason == "patience"
    assert len(result.history) == 2 and not any(r.best for r in result.history)
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    cfg = replace(cfg, learning_rate=1e-3, epochs=1)
    trained = train_recvae(
        small_split.train, small_split.validation, cfg, device="cpu", initial_model=initial
    )
    assert not torch.equal(trained.model.decoder.weight, initial.decoder.weight)
    for name, value in initial.state_dict().items():
        assert torch.equal(value, before[name]), name
    cold = train_recvae(small_split.train, small_split.validation, replace(TINY, epochs=1), device="cpu")
    assert cold.initial_metrics is None


def test_warm_prior_starts_at_the_initial_encoder(small_split: Split) -> None:
    """The composite prior's q_old(z|x) is the starting encoder's posterior, per user."""
    initial = RecVAE(small_split.train.shape[1], replace(TINY, seed=4)).eval()
    trainer = _Trainer(sp.csr_matrix(small_split.train), TINY, torch.device("cpu"), initial)
    trainer.refresh_stale_prior(np.arange(small_split.train.shape[0]))  # what the first epoch does
    with torch.no_grad():
        mu, logvar = initial.encoder(SparseBatch.from_csr(small_split.train, "cpu"))
    torch.testing.assert_close(trainer.prior_mu, mu)
    torch.testing.assert_close(trainer.prior_logvar, logvar)
    cold = _Trainer(sp.csr_matrix(small_split.train), replace(TINY, seed=4), torch.device("cpu"))
    assert not torch.allclose(cold.prior_mu, mu)  # a cold start draws its own old encoder


def test_rows_an_epoch_skipped_get_the_current_encoder_as_prior_when_next_trained(small_split: Split) -> None:
    """A warm epoch trains a subset; the others' q_old must not stay at an older encoder."""
    initial = RecVAE(small_split.train.shape[1], replace(TINY, seed=4)).eval()
    trainer = _Trainer(sp.csr_matrix(small_split.train), TINY, torch.device("cpu"), initial)
    n = small_split.train.shape[0]
    trainer.epoch(np.arange(0, n, 2))
    assert trainer.prior_fresh[::2].all() and not trainer.prior_fresh[1::2].any()
    trainer.refresh_stale_prior(np.arange(n))
    with torch.no_grad():
        mu, _ = trainer.model.encoder(SparseBatch.from_csr(small_split.train, "cpu"))
    torch.testing.assert_close(trainer.prior_mu[1::2], mu[1::2])
    assert trainer.prior_fresh.all()


def _topic_interactions(n_users: int = 800, n_items: int = 240, n_topics: int = 8) -> Interactions:
    """Users star mostly (85%) popular items of their own topic: structure a model can learn."""
    rng = np.random.default_rng(0)
    item_topic = np.arange(n_items) % n_topics
    user_topic = rng.integers(n_topics, size=n_users)
    users, items = [], []
    for u in range(n_users):
        k = int(rng.integers(8, 20))
        own = np.flatnonzero(item_topic == user_topic[u])
        p = 1.0 / (np.arange(len(own)) + 3.0)
        n_own = min(round(0.85 * k), len(own))
        picked = np.concatenate(
            [rng.choice(own, size=n_own, replace=False, p=p / p.sum()), rng.choice(n_items, size=k - n_own)]
        )
        users.append(np.full(len(picked), u))
        items.append(picked)
    return build_interactions(np.concatenate(users), np.concatenate(items))


def _columns(held: HeldOut, keep: np.ndarray) -> HeldOut:
    return HeldOut(held.user_ids, held.fold_in[:, keep], held.target[:, keep])


def test_warm_start_beats_a_cold_start_after_the_same_few_epochs() -> None:
    split = split_users(_topic_interactions(), n_validation=150, n_test=150, seed=0)
    assert split.test is not None
    n = split.train.shape[1]
    perm = np.random.default_rng(0).permutation(n)
    prev_cols = np.setdiff1d(np.arange(n), perm[:12])  # 12 items appear in the new hour
    new_cols = np.setdiff1d(np.arange(n), perm[12:16])  # 4 items are dropped
    cfg = RecVAEConfig(hidden_dim=64, latent_dim=16, batch_size=64, epochs=30, seed=0)
    prev = train_recvae(split.train[:, prev_cols], _columns(split.validation, prev_cols), cfg, device="cpu")

    train, ids = split.train[:, new_cols], split.item_ids[new_cols]
    validation, test = _columns(split.validation, new_cols), _columns(split.test, new_cols)
    model, report = warm_start(prev.model, split.item_ids[prev_cols], ids, train=train)
    assert (report.kept, report.new, report.dropped) == (n - 16, 12, 4)
    short = replace(cfg, epochs=2)
    warm = train_recvae(train, validation, short, device="cpu", initial_model=model)
    cold = train_recvae(train, validation, short, device="cpu")

    pop = Popularity().fit(train)

    def test_ndcg(m: RecVAE, item_ids: np.ndarray, held: HeldOut) -> float:
        rec = Recommender(m, item_ids, np.ones(len(item_ids)))
        return evaluate(rec, held.fold_in, held.target)["ndcg@100"]

    previous_score = test_ndcg(prev.model, split.item_ids[prev_cols], _columns(split.test, prev_cols))
    warm_score, cold_score = test_ndcg(warm.model, ids, test), test_ndcg(cold.model, ids, test)
    pop_score = evaluate(pop, test.fold_in, test.target)["ndcg@100"]
    # Measured over 4 data seeds: previous 0.51-0.56, warm 0.51-0.56, cold 0.19-0.20, popularity 0.16-0.18.
    assert warm_score >= 0.9 * previous_score, (warm_score, previous_score)
    assert warm_score > cold_score + 0.15, (warm_score, cold_score)
    assert cold_score > pop_score - 0.05  # the cold run is a fair comparison, not a broken one


def test_artifact_extra_carries_the_training_mode(small_split: Split) -> None:
    result = train_recvae(small_split.train, small_split.validation, replace(TINY, epochs=1), device="cpu")
    rec = Recommender(result.model, small_split.item_ids, Popularity().fit(small_split.train).popularity)
    _, report = warm_start(result.model, small_split.item_ids, small_split.item_ids)
    training = {
        "mode": "warm",
        "started_from": "recvae_0.41_2026-03-01-20:00_abc.pt",
        "reason": "vocabulary overlap 0.97 >= 0.80",
        "warm_start": report.to_dict(),
    }
    loaded = load_artifact(dump_artifact(rec, config=result.config, metrics={}, extra={"training": training}))
    assert loaded.extra["training"] == training


def test_mean_code_from_a_user_sample_is_deterministic_and_close(monkeypatch: pytest.MonkeyPatch) -> None:
    import recvae.warm

    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((300, 50)) < 0.2).astype(np.float32))
    previous = RecVAE(45, replace(TINY, seed=1))
    with torch.no_grad():
        previous.decoder.weight.mul_(5)  # make the decoder rows matter, as in a trained model
    ids = np.arange(50)
    everyone, _ = warm_start(previous, ids[:45], ids[5:], train=train[:, 5:])
    monkeypatch.setattr(recvae.warm, "MEAN_CODE_USERS", 100)
    sampled, _ = warm_start(previous, ids[:45], ids[5:], train=train[:, 5:])
    again, _ = warm_start(previous, ids[:45], ids[5:], train=train[:, 5:])
    assert torch.equal(sampled.decoder.bias, again.decoder.bias)
    assert not torch.equal(sampled.decoder.bias, everyone.decoder.bias)  # the sample was used
    # 100 of 300 users: 0.07 apart at most here, against a spread of 0.29 in the kept biases.
    torch.testing.assert_close(sampled.decoder.bias, everyone.decoder.bias, atol=0.15, rtol=0)
