"""Device selection (a clear error when CUDA is asked for and absent) and bf16 mixed precision."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from recvae import (
    CudaUnavailableError,
    Popularity,
    Recommender,
    RecVAE,
    RecVAEConfig,
    Split,
    dump_artifact,
    evaluate,
    load_artifact,
    train_recvae,
)
from recvae.likelihood import LogitsWorkspace, decoder_nll
from recvae.model import add_input_grad
from recvae.sparse import SparseBatch

TINY = RecVAEConfig(hidden_dim=32, latent_dim=8, batch_size=64)
# On this CPU-only machine plain "cuda" is absent; where a GPU exists, an index past the last one is.
MISSING_CUDA = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


def test_asking_for_absent_cuda_is_a_clear_error(small_split: Split) -> None:
    val = small_split.validation
    with pytest.raises(CudaUnavailableError, match="CUDA is unavailable"):
        train_recvae(small_split.train, val, replace(TINY, epochs=1), device=MISSING_CUDA)
    model = RecVAE(small_split.train.shape[1], TINY)
    pop = np.ones(model.n_items, dtype=np.float32)
    with pytest.raises(CudaUnavailableError, match="CUDA is unavailable"):
        Recommender(model, small_split.item_ids, pop, device=MISSING_CUDA)
    rec = Recommender(model, small_split.item_ids, pop)
    with pytest.raises(CudaUnavailableError, match="CUDA is unavailable"):
        evaluate(rec, val.fold_in, val.target, device=MISSING_CUDA)
    blob = dump_artifact(rec, config=TINY, metrics={})
    with pytest.raises(CudaUnavailableError, match="CUDA is unavailable"):
        load_artifact(blob, device=MISSING_CUDA)
    assert issubclass(CudaUnavailableError, RuntimeError)


@pytest.mark.parametrize("scatter", [False, True])
def test_first_layer_gradient_both_kernels(scatter: bool) -> None:
    """The CPU kernel (sparse CSR product) and the GPU one (scatter-add), both run here on CPU."""
    m = sp.random(7, 30, density=0.3, format="csr", random_state=1, dtype=np.float32)
    batch = SparseBatch.from_csr(m, "cpu")
    weights = torch.rand(batch.indices.shape[0], generator=torch.Generator().manual_seed(0))
    grad_h = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    dense = torch.zeros(7, 30)
    dense[batch.rows, batch.indices] = weights
    grad = torch.ones(30, 5)  # accumulates into what is there
    add_input_grad(grad, batch, weights, grad_h, scatter=scatter)
    torch.testing.assert_close(grad, 1.0 + dense.t() @ grad_h)


def test_bf16_decoder_likelihood_is_close_to_float32() -> None:
    m = sp.random(12, 300, density=0.05, format="csr", random_state=2, dtype=np.float32)
    m.data[:] = 1.0
    batch = SparseBatch.from_csr(m, "cpu")
    dense = torch.from_numpy(m.toarray())
    torch.manual_seed(0)
    decoder = torch.nn.Linear(8, 300)
    z = torch.randn(12, 8, requires_grad=True)
    expected = -(F.log_softmax(decoder(z), -1) * dense).sum(-1)
    expected.sum().backward()
    ref = [t.grad.clone() for t in (z, decoder.weight, decoder.bias)]
    for t in (z, decoder.weight, decoder.bias):
        t.grad = None

    workspace = LogitsWorkspace(16, 300, torch.device("cpu"), low_precision=torch.bfloat16)
    got = decoder_nll(z, decoder, batch, workspace)
    assert got.dtype == torch.float32
    got.sum().backward()
    # bf16 keeps ~3 significant digits: close, and not bit-identical (the bf16 path really ran).
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=0.0)
    assert not torch.equal(got, expected)
    for t, r in zip((z, decoder.weight, decoder.bias), ref, strict=True):
        assert t.grad is not None and t.grad.dtype == torch.float32
        torch.testing.assert_close(t.grad, r, rtol=5e-2, atol=5e-3 * float(r.abs().max()))


def test_mixed_precision_trains_to_close_results_on_cpu(small_split: Split) -> None:
    val = small_split.validation
    base = replace(TINY, epochs=4)
    full = train_recvae(small_split.train, val, base, device="cpu")
    mixed = train_recvae(small_split.train, val, replace(base, mixed_precision=True), device="cpu")
    assert all(np.isfinite(r.loss) for r in mixed.history)
    assert not torch.equal(full.model.decoder.weight, mixed.model.decoder.weight)  # bf16 was used
    for a, b in zip(full.history, mixed.history, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=0.02)
        assert b.ndcg_at_100 == pytest.approx(a.ndcg_at_100, abs=0.03)
    # The model comes back in float32 and scores in float32.
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    rec = Recommender(mixed.model, small_split.item_ids, Popularity().fit(small_split.train).popularity)
    assert rec.score(val.fold_in).dtype == torch.float32


def test_mixed_precision_travels_in_the_config_and_old_configs_still_load() -> None:
    cfg = RecVAEConfig.from_dict(replace(TINY, mixed_precision=True).to_dict())
    assert cfg.mixed_precision is True
    old = TINY.to_dict()
    del old["mixed_precision"]
    assert RecVAEConfig.from_dict(old).mixed_precision is False
