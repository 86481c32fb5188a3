"""The CUDA path against the CPU one. Skipped where there is no GPU (this project's CI machine);
benchmarks/gpu_check.sh runs it on a GPU machine."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recvae import Popularity, Recommender, RecVAE, RecVAEConfig, Split, evaluate, train_recvae, warm_start
from recvae.likelihood import LogitsWorkspace, decoder_nll
from recvae.model import add_input_grad
from recvae.sparse import SparseBatch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TINY = RecVAEConfig(hidden_dim=32, latent_dim=8, batch_size=64)


def test_first_layer_gradient_on_cuda_matches_cpu() -> None:
    m = sp.random(50, 400, density=0.05, format="csr", random_state=3, dtype=np.float32)
    weights = torch.rand(m.nnz, generator=torch.Generator().manual_seed(0))
    grad_h = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    cpu = torch.zeros(400, 16)
    add_input_grad(cpu, SparseBatch.from_csr(m, "cpu"), weights, grad_h)
    gpu = torch.zeros(400, 16, device="cuda")
    add_input_grad(gpu, SparseBatch.from_csr(m, "cuda"), weights.cuda(), grad_h.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("low_precision", [None, torch.bfloat16])
def test_decoder_likelihood_on_cuda_matches_cpu(low_precision: torch.dtype | None) -> None:
    m = sp.random(20, 500, density=0.05, format="csr", random_state=4, dtype=np.float32)
    m.data[:] = 1.0
    torch.manual_seed(0)
    decoder = torch.nn.Linear(8, 500)
    z = torch.randn(20, 8)
    expected = decoder_nll(
        z, decoder, SparseBatch.from_csr(m, "cpu"), LogitsWorkspace(20, 500, torch.device("cpu"))
    )
    decoder.cuda()
    ws = LogitsWorkspace(20, 500, torch.device("cuda"), low_precision=low_precision)
    got = decoder_nll(z.cuda(), decoder, SparseBatch.from_csr(m, "cuda"), ws)
    rtol = 2e-2 if low_precision is not None else 1e-4
    torch.testing.assert_close(got.cpu(), expected.detach(), rtol=rtol, atol=1e-3)


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_training_and_evaluation_on_cuda(small_split: Split, mixed_precision: bool) -> None:
    val = small_split.validation
    cfg = replace(TINY, epochs=5, mixed_precision=mixed_precision)
    result = train_recvae(small_split.train, val, cfg, device="cuda")
    assert result.device.startswith("cuda") and all(np.isfinite(r.loss) for r in result.history)
    assert next(result.model.parameters()).is_cuda
    pop = Popularity().fit(small_split.train).popularity
    on_gpu = evaluate(Recommender(result.model, small_split.item_ids, pop), val.fold_in, val.target)
    cpu_model = RecVAE(result.model.n_items, cfg)
    cpu_model.load_state_dict({k: v.cpu() for k, v in result.model.state_dict().items()})
    on_cpu = evaluate(
        Recommender(cpu_model, small_split.item_ids, pop, device="cpu"), val.fold_in, val.target
    )
    assert on_gpu["ndcg@100"] == pytest.approx(on_cpu["ndcg@100"], abs=1e-3)
    assert on_gpu["ndcg@100"] == pytest.approx(result.best_metrics["ndcg@100"], abs=1e-4)


def test_warm_start_trains_on_cuda(small_split: Split) -> None:
    first = train_recvae(small_split.train, small_split.validation, replace(TINY, epochs=3), device="cuda")
    model, report = warm_start(
        first.model, small_split.item_ids, small_split.item_ids, train=small_split.train
    )
    assert report.kept == len(small_split.item_ids)
    again = train_recvae(
        small_split.train, small_split.validation, replace(TINY, epochs=2), device="cuda", initial_model=model
    )
    assert again.initial_metrics is not None
    assert again.initial_metrics["ndcg@100"] == pytest.approx(first.best_metrics["ndcg@100"], abs=1e-4)


def test_moments_trained_on_cuda_carry_into_a_warm_hour_on_cuda(small_split: Split) -> None:
    from recvae import train_warm
    from recvae.checkpoint import dump_checkpoint, load_checkpoint

    first = train_recvae(small_split.train, small_split.validation, replace(TINY, epochs=2), device="cuda")
    moments = load_checkpoint(dump_checkpoint(first.moments))   # CPU tensors, as read from storage
    assert all(t.device.type == "cpu" for t in moments.exp_avg.values())
    out = train_warm(first.model.cpu(), small_split.item_ids, small_split.train, small_split.item_ids,
                     small_split.validation, replace(TINY, epochs=1), moments=moments, device="cuda")
    assert out.report.optimizer_moments == "carried" and out.training.device.startswith("cuda")
    steps = out.training.moments.steps
    assert steps["decoder.weight"] > first.moments.steps["decoder.weight"]
