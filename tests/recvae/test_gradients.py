"""The hand-written backward passes used in training against plain autograd."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recvae import RecVAE, RecVAEConfig
from recvae.likelihood import LogitsWorkspace, decoder_nll
from recvae.sparse import SparseBatch


def _batch(seed: int, n_users: int = 6, n_items: int = 25) -> tuple[SparseBatch, torch.Tensor]:
    m = sp.random(n_users, n_items, density=0.3, format="csr", random_state=seed, dtype=np.float32)
    m.data[:] = 1.0
    return SparseBatch.from_csr(m, "cpu"), torch.from_numpy(m.toarray())


def test_decoder_nll_matches_autograd() -> None:
    batch, dense = _batch(0)
    torch.manual_seed(0)
    decoder = torch.nn.Linear(4, dense.shape[1])
    z = torch.randn(dense.shape[0], 4, requires_grad=True)
    upstream = torch.rand(dense.shape[0])

    expected = -(F.log_softmax(decoder(z), -1) * dense).sum(-1)
    (expected * upstream).sum().backward()
    ref = [t.grad.clone() for t in (z, decoder.weight, decoder.bias)]

    for t in (z, decoder.weight, decoder.bias):
        t.grad = None
    # A workspace larger than the batch, as for the last, smaller batch of a pass.
    got = decoder_nll(z, decoder, batch, LogitsWorkspace(10, dense.shape[1], torch.device("cpu")))
    torch.testing.assert_close(got, expected)
    (got * upstream).sum().backward()
    for t, r in zip((z, decoder.weight, decoder.bias), ref, strict=True):
        torch.testing.assert_close(t.grad, r)


def test_decoder_nll_skips_frozen_decoder_gradients() -> None:
    batch, dense = _batch(1)
    decoder = torch.nn.Linear(3, dense.shape[1]).requires_grad_(False)
    z = torch.randn(dense.shape[0], 3, requires_grad=True)
    ws = LogitsWorkspace(dense.shape[0], dense.shape[1], torch.device("cpu"))
    decoder_nll(z, decoder, batch, ws).sum().backward()
    assert z.grad is not None and decoder.weight.grad is None and decoder.bias.grad is None


def test_fast_input_gradient_matches_and_accumulates() -> None:
    batch, _ = _batch(2)
    cfg = RecVAEConfig(hidden_dim=8, latent_dim=3)
    slow, fast = RecVAE(25, cfg), RecVAE(25, cfg)
    fast.encoder.fast_input_grad = True
    for model in (slow, fast):
        for _ in range(2):  # gradients of two backward passes must add up
            mu, logvar = model.encoder(batch)
            (mu.pow(2).sum() + logvar.sum()).backward()
    for name, p in slow.named_parameters():
        torch.testing.assert_close(dict(fast.named_parameters())[name].grad, p.grad)
