"""RecVAE (Shenbin et al., WSDM 2020), following the authors' reference code (ilya-shenbin/RecVAE).

Differences from the reference are in how it is computed, not what: the first layer reads sparse
input through `embedding_bag`, and the multinomial likelihood gathers the log-softmax at the
user's items instead of multiplying by a dense input matrix.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recvae.sparse import SparseBatch

LOG_2PI = math.log(2.0 * math.pi)
# The composite prior's third component: zero mean, log-variance 10 (the reference's "uniform").
WIDE_PRIOR_LOGVAR = 10.0
LAYER_NORM_EPS = 0.1


@dataclass
class RecVAEConfig:
    """Hyper-parameters; the defaults are the paper's / the reference run.py's."""

    hidden_dim: int = 600
    latent_dim: int = 200
    input_dropout: float = 0.5
    gamma: float = 0.005
    learning_rate: float = 5e-4
    batch_size: int = 500
    epochs: int = 50
    encoder_passes: int = 3
    decoder_passes: int = 1
    mixture_weights: tuple[float, float, float] = (3 / 20, 3 / 4, 1 / 10)
    seed: int = 0
    patience: int | None = None
    time_budget_s: float | None = None
    # bf16 matmuls in training (likelihood, KL and optimiser state stay float32); see device.py.
    mixed_precision: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mixture_weights"] = list(self.mixture_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecVAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown RecVAEConfig fields: {sorted(unknown)}")
        d = dict(d)
        if "mixture_weights" in d:
            d["mixture_weights"] = tuple(float(w) for w in d["mixture_weights"])
        return cls(**d)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def log_norm_pdf(x: torch.Tensor, mu: torch.Tensor | float, logvar: torch.Tensor | float) -> torch.Tensor:
    logvar_t = torch.as_tensor(logvar, dtype=x.dtype, device=x.device)
    return -0.5 * (logvar_t + LOG_2PI + (x - mu).pow(2) / logvar_t.exp())


def composite_prior_log_density(
    z: torch.Tensor,
    post_mu: torch.Tensor,
    post_logvar: torch.Tensor,
    mixture_weights: tuple[float, float, float],
) -> torch.Tensor:
    """log p(z) per latent dimension under the mixture N(0, I), q_old(z | x), N(0, e^10 I)."""
    components = torch.stack(
        [
            log_norm_pdf(z, 0.0, 0.0) + math.log(mixture_weights[0]),
            log_norm_pdf(z, post_mu, post_logvar) + math.log(mixture_weights[1]),
            log_norm_pdf(z, 0.0, WIDE_PRIOR_LOGVAR) + math.log(mixture_weights[2]),
        ],
        dim=-1,
    )
    return torch.logsumexp(components, dim=-1)


def add_input_grad(
    grad: torch.Tensor,
    batch: SparseBatch,
    weights: torch.Tensor,
    grad_h: torch.Tensor,
    scatter: bool | None = None,
) -> None:
    """grad += x^T @ grad_h for the sparse batch x (entries `weights`), in place.

    On CPU: one sparse CSR x dense product. Elsewhere (CUDA), or with `scatter=True`: a
    scatter-add of each entry's weighted row, one atomic kernel that needs no sparse-matrix
    support from the backend.
    """
    if scatter if scatter is not None else grad.device.type != "cpu":
        grad.index_add_(0, batch.indices, grad_h[batch.rows] * weights[:, None])
        return
    order = torch.argsort(batch.indices)
    n_items = grad.shape[0]
    crow = torch.searchsorted(batch.indices[order], torch.arange(n_items + 1, device=grad_h.device))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        x_t = torch.sparse_csr_tensor(
            crow,
            batch.rows[order],
            weights[order],
            (n_items, batch.size),
            check_invariants=False,
        )
    torch.addmm(grad, x_t, grad_h, out=grad)


class SparseInputLayer(torch.autograd.Function):
    """x @ W for a sparse batch x, with W's gradient x^T @ grad added into W.grad in place.

    embedding_bag's own backward allocates and zero-fills a dense n_items x hidden gradient each
    step; on CPU that costs several times the product itself.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        batch: SparseBatch,
        weights: torch.Tensor,
        input_weight: torch.Tensor,
    ) -> torch.Tensor:
        ctx.batch, ctx.weights, ctx.input_weight = batch, weights, input_weight
        return F.embedding_bag(
            batch.indices, input_weight, batch.offsets, mode="sum", per_sample_weights=weights
        )

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_h: torch.Tensor
    ) -> tuple[None, None, None]:
        param = ctx.input_weight
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        # float32 even when autocast ran the layers above in bf16.
        add_input_grad(param.grad, ctx.batch, ctx.weights.detach(), grad_h.to(param.dtype))
        ctx.batch = ctx.weights = ctx.input_weight = None
        return None, None, None


class Encoder(nn.Module):
    """Five dense layers, each fed the sum of all earlier outputs, with swish and LayerNorm."""

    def __init__(self, n_items: int, hidden_dim: int, latent_dim: int) -> None:
        super().__init__()
        # Stored as [n_items, hidden] (embedding layout) so embedding_bag can gather rows;
        # initialised like nn.Linear(n_items, hidden).
        bound = 1.0 / math.sqrt(n_items)
        self.input_weight = nn.Parameter(torch.empty(n_items, hidden_dim).uniform_(-bound, bound))
        self.input_bias = nn.Parameter(torch.empty(hidden_dim).uniform_(-bound, bound))
        self.norms = nn.ModuleList([nn.LayerNorm(hidden_dim, eps=LAYER_NORM_EPS) for _ in range(5)])
        self.hidden = nn.ModuleList([nn.Linear(hidden_dim, hidden_dim) for _ in range(4)])
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        # Set by training: the first layer's weight gradient is then added into its .grad buffer
        # by one sparse x dense product (see SparseInputLayer) instead of embedding_bag's backward.
        self.fast_input_grad = False

    def forward(
        self,
        batch: SparseBatch,
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # L2-normalise each user's row, then drop entries (as the reference: norm before dropout).
        sq = torch.zeros(batch.size, device=batch.values.device)
        sq.index_add_(0, batch.rows, batch.values * batch.values)
        # clamp: a user with no items gets a zero input instead of 0/0.
        inv_norm = sq.clamp_min(1e-12).rsqrt()
        weights = batch.values * inv_norm[batch.rows]
        if dropout > 0.0:
            keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= dropout
            weights = weights * keep / (1.0 - dropout)
        if self.fast_input_grad and torch.is_grad_enabled() and self.input_weight.requires_grad:
            h = SparseInputLayer.apply(batch, weights, self.input_weight)
        else:
            h = F.embedding_bag(
                batch.indices,
                self.input_weight,
                batch.offsets,
                mode="sum",
                per_sample_weights=weights,
            )
        h = self.norms[0](swish(h + self.input_bias))
        skip = h
        for layer, norm in zip(self.hidden, self.norms[1:], strict=True):
            h = norm(swish(layer(h) + skip))
            skip = skip + h
        return self.fc_mu(h), self.fc_logvar(h)


class RecVAE(nn.Module):
    """Encoder + linear decoder. `forward` returns item logits from the posterior mean."""

    def __init__(self, n_items: int, config: RecVAEConfig) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError("n_items must be >= 1")
        self.n_items = n_items
        self.config = config
        # Parameters are drawn from a private generator so a seed fixes the initialisation on any
        # device without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.encoder = Encoder(n_items, config.hidden_dim, config.latent_dim)
            self.decoder = nn.Linear(config.latent_dim, n_items)

    def forward(self, batch: SparseBatch) -> torch.Tensor:
        mu, _ = self.encoder(batch)
        return self.decoder(mu)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


def multinomial_log_likelihood(logits: torch.Tensor, batch: SparseBatch) -> torch.Tensor:
    """sum_i x_ui log softmax(logits_u)_i per user, touching only the user's non-zeros."""
    log_norm = torch.logsumexp(logits, dim=-1)
    picked = logits[batch.rows, batch.indices] * batch.values
    per_user = torch.zeros_like(log_norm).index_add_(0, batch.rows, picked)
    return per_user - log_norm * batch.counts
