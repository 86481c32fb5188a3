from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recvae import RecVAE, RecVAEConfig
from recvae.model import composite_prior_log_density, multinomial_log_likelihood
from recvae.sparse import DeviceCSR, SparseBatch

SMALL = RecVAEConfig(hidden_dim=16, latent_dim=4)


def _random_csr(n_users: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    m = sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32)
    m.data[:] = 1.0
    return m


def _reference_encoder(model: RecVAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' dense formulation, for comparison with the sparse one."""
    enc = model.encoder
    x = x / x.pow(2).sum(-1).sqrt()[:, None]

    def sw(t: torch.Tensor) -> torch.Tensor:
        return t * torch.sigmoid(t)

    h1 = enc.norms[0](sw(x @ enc.input_weight + enc.input_bias))
    h2 = enc.norms[1](sw(enc.hidden[0](h1) + h1))
    h3 = enc.norms[2](sw(enc.hidden[1](h2) + h1 + h2))
    h4 = enc.norms[3](sw(enc.hidden[2](h3) + h1 + h2 + h3))
    h5 = enc.norms[4](sw(enc.hidden[3](h4) + h1 + h2 + h3 + h4))
    return enc.fc_mu(h5), enc.fc_logvar(h5)


def test_config_defaults_are_the_papers_and_round_trip() -> None:
    c = RecVAEConfig()
    assert (c.hidden_dim, c.latent_dim, c.gamma, c.learning_rate, c.batch_size) == (
        600,
        200,
        0.005,
        5e-4,
        500,
    )
    assert (c.encoder_passes, c.decoder_passes, c.input_dropout) == (3, 1, 0.5)
    assert c.mixture_weights == pytest.approx((0.15, 0.75, 0.1))
    d = RecVAEConfig(epochs=7, patience=3, time_budget_s=1.5).to_dict()
    assert RecVAEConfig.from_dict(d) == RecVAEConfig(epochs=7, patience=3, time_budget_s=1.5)
    with pytest.raises(ValueError):
        RecVAEConfig.from_dict({"no_such_field": 1})


def test_sparse_encoder_matches_dense_reference() -> None:
    dense = _random_csr(9, 30, 0.2, seed=1).toarray()
    dense[:, 0] = 1.0  # no empty rows here: the dense reference divides by the row norm
    x = sp.csr_matrix(dense)
    model = RecVAE(30, SMALL).eval()
    mu, logvar = model.encoder(SparseBatch.from_csr(x, "cpu"))
    ref_mu, ref_logvar = _reference_encoder(model, torch.from_numpy(x.toarray()))
    torch.testing.assert_close(mu, ref_mu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar, ref_logvar, atol=1e-5, rtol=1e-5)


def test_forward_shapes_and_finite_even_for_empty_users() -> None:
    dense = _random_csr(5, 40, 0.1, seed=2).toarray()
    dense[2] = 0.0
    x = sp.csr_matrix(dense)
    model = RecVAE(40, SMALL)
    logits = model(SparseBatch.from_csr(x, "cpu"))
    assert logits.shape == (5, 40)
    assert torch.isfinite(logits).all()


def test_device_csr_batches_match_host_rows() -> None:
    x = _random_csr(20, 15, 0.3, seed=3)
    data = DeviceCSR(x, "cpu")
    order = np.random.default_rng(0).permutation(20)
    seen = []
    for rows, batch in data.iterate(order, 6):
        expected = SparseBatch.from_csr(x[rows.numpy()], "cpu")
        assert torch.equal(batch.indices, expected.indices)
        assert torch.equal(batch.offsets, expected.offsets)
        assert torch.equal(batch.rows, expected.rows)
        assert torch.equal(batch.counts, expected.counts)
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(20))


def test_multinomial_log_likelihood_matches_dense_formula() -> None:
    x = _random_csr(4, 12, 0.4, seed=4)
    logits = torch.randn(4, 12)
    got = multinomial_log_likelihood(logits, SparseBatch.from_csr(x, "cpu"))
    expected = (F.log_softmax(logits, -1) * torch.from_numpy(x.toarray())).sum(-1)
    torch.testing.assert_close(got, expected)


def test_composite_prior_is_the_weighted_mixture() -> None:
    z, mu, logvar = torch.tensor([[0.3]]), torch.tensor([[-0.2]]), torch.tensor([[0.5]])

    def normal(x: float, m: float, lv: float) -> float:
        return math.exp(-0.5 * (lv + math.log(2 * math.pi) + (x - m) ** 2 / math.exp(lv)))

    density = 0.15 * normal(0.3, 0, 0) + 0.75 * normal(0.3, -0.2, 0.5) + 0.1 * normal(0.3, 0, 10)
    got = composite_prior_log_density(z, mu, logvar, (0.15, 0.75, 0.1))
    assert got.item() == pytest.approx(math.log(density), rel=1e-5)


def test_same_seed_same_initialisation_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = RecVAE(10, SMALL), RecVAE(10, SMALL)
    after = torch.rand(1)
    assert torch.equal(before, after)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = RecVAE(10, RecVAEConfig(hidden_dim=16, latent_dim=4, seed=1))
    assert not torch.equal(a.decoder.weight, c.decoder.weight)
