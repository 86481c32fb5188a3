"""RecVAE training: alternating encoder / decoder phases, best epoch by validation NDCG@100.

Per epoch, as in the reference run.py: `encoder_passes` passes over the users updating only the
encoder (input dropout, KL to the composite prior), the prior is refreshed to the current encoder,
then `decoder_passes` passes updating only the decoder (no dropout).

Cost savings over the reference, none of which changes what is optimised:
- batches are sliced from a CSR matrix that lives on the device; the first layer is sparse;
- the previous encoder's posterior q_old(z|x) is deterministic (no dropout), so it is cached per
  user instead of re-running the old encoder every step. The cache is filled for free by the last
  decoder pass, which runs exactly that encoder on every user;
- decoder phases run the encoder under no_grad, encoder phases freeze the decoder's weights so
  their gradients are never formed;
- validation is batched on the device.

Warm start (`initial_model`): training continues from the given weights, and the composite
prior's q_old starts as that model's own encoder: at the start of every epoch of the alternating
scheme q_old equals the current encoder (the last decoder pass refilled the cache with it), so
this is the state the scheme would be in had it never stopped. A freshly drawn old encoder, as in
a cold start, would pull the trained posterior towards noise with 3/4 of the prior's weight. The
starting model is scored on validation first as epoch 0 and stays the answer unless an epoch
beats it. Adam's moments start fresh unless `initial_moments` carries them over (recvae.checkpoint;
artifacts hold weights only); `TrainResult.moments` holds the run's last moments.

Mixed precision (`config.mixed_precision`): the encoder's dense layers run under bf16 autocast and
the decoder's matmuls in bf16 (likelihood.py); the KL, the likelihood and the optimisers stay
float32. Validation always scores in float32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from recvae.checkpoint import OptimizerMoments
from recvae.data import HeldOut
from recvae.device import autocast, low_precision_dtype, resolve_device
from recvae.inference import score_with_model
from recvae.likelihood import LogitsWorkspace, decoder_nll
from recvae.metrics import evaluate
from recvae.model import (
    Encoder,
    RecVAE,
    RecVAEConfig,
    composite_prior_log_density,
    log_norm_pdf,
    reparameterize,
)
from recvae.sparse import DeviceCSR, SparseBatch
from recvae.warm import check_architecture


@dataclass
class EpochReport:
    epoch: int
    seconds: float
    loss: float  # mean negative ELBO over the epoch's encoder-phase batches
    ndcg_at_100: float
    recall_at_20: float
    recall_at_50: float
    best: bool
    train_seconds: float = 0.0  # the encoder and decoder phases alone
    eval_seconds: float = 0.0  # validation scoring alone


@dataclass
class TrainResult:
    model: RecVAE
    config: RecVAEConfig
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[EpochReport] = field(default_factory=list)
    stop_reason: str = "epochs"  # "epochs" | "patience" | "time_budget"
    seconds: float = 0.0
    device: str = "cpu"
    # Validation metrics of `initial_model` before any training (warm start only).
    initial_metrics: dict[str, float] | None = None
    validation_se: float = 0.0  # standard error over users of the kept epoch's validation NDCG@100
    # Adam's moments after the last epoch (not the kept one's), for the next warm run's checkpoint
    moments: OptimizerMoments | None = None


class _ModelScorer:
    def __init__(self, model: RecVAE, device: torch.device) -> None:
        self.model, self.device = model, device

    def score(self, fold_in: sp.csr_matrix) -> torch.Tensor:
        return score_with_model(self.model, fold_in, self.device)


def _make_adam(params: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Adam:
    # fused Adam is one kernel over all tensors; it exists for CPU and CUDA in torch >= 2.4.
    try:
        return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _set_moments(opt: torch.optim.Optimizer, names: list[str], moments: OptimizerMoments) -> None:
    state = opt.state_dict()
    for index, name in enumerate(names):
        state["state"][index] = {"step": torch.tensor(float(moments.steps[name])),
                                 "exp_avg": moments.exp_avg[name], "exp_avg_sq": moments.exp_avg_sq[name]}
    # casts to each parameter's device and dtype; a tensor already there is taken as it is, not
    # copied (the moments are twice the model's size)
    opt.load_state_dict(state)


def _moments(optimizers: list[tuple[torch.optim.Optimizer, list[str]]]) -> OptimizerMoments:
    out = OptimizerMoments({}, {}, {})
    for opt, names in optimizers:
        for name, param in zip(names, opt.param_groups[0]["params"], strict=True):
            state = opt.state.get(param)
            if not state:  # a parameter never stepped (no epoch ran)
                continue
            out.exp_avg[name] = state["exp_avg"].detach().cpu()
            out.exp_avg_sq[name] = state["exp_avg_sq"].detach().cpu()
            out.steps[name] = float(state["step"])
    return out


class _Trainer:
    def __init__(
        self,
        train: sp.csr_matrix,
        config: RecVAEConfig,
        device: torch.device,
        initial_model: RecVAE | None = None,
        initial_moments: OptimizerMoments | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self.data = DeviceCSR(train, device)
        n_users, n_items = train.shape
        self.model = RecVAE(n_items, config)
        if initial_model is not None:  # copied in: the caller's model is left as it was
            self.model.load_state_dict(initial_model.state_dict())
        self.model.to(device)
        self.model.encoder.fast_input_grad = True
        # Gradient buffers live for the whole run (zeroed in place, never set to None): the
        # sparse first-layer gradient is added into them and allocations stay out of the loop.
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        self.workspace = LogitsWorkspace(
            min(config.batch_size, n_users), n_items, device, low_precision_dtype(config.mixed_precision)
        )
        self.optimizers = []
        for part in ("encoder", "decoder"):
            named = list(getattr(self.model, part).named_parameters())
            opt = _make_adam([p for _, p in named], config.learning_rate, device)
            names = [f"{part}.{n}" for n, _ in named]
            if initial_moments is not None:
                _set_moments(opt, names, initial_moments)
            self.optimizers.append((opt, names))
        (self.opt_encoder, _), (self.opt_decoder, _) = self.optimizers
        self.noise = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.order_rng = np.random.default_rng(config.seed + 2)
        self.prior_mu = torch.zeros(n_users, config.latent_dim, device=device)
        self.prior_logvar = torch.zeros(n_users, config.latent_dim, device=device)
        # Which rows of the prior cache hold the current encoder's posterior. The alternating
        # scheme wants q_old = the encoder as it was at the start of the epoch; rows an epoch
        # skips (a warm epoch trains a subset of users) go stale and are refreshed when next used.
        self.prior_fresh = np.zeros(n_users, dtype=bool)
        if initial_model is not None:
            return  # warm: q_old = the starting encoder, filled per row at its first epoch
        # The reference starts with an independently initialised "old" encoder as the prior.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 3)
            initial = Encoder(n_items, config.hidden_dim, config.latent_dim)
        self._refresh_prior(initial.to(device), np.arange(n_users))
        self.prior_fresh[:] = True

    def _encode(
        self, encoder: Encoder, batch: SparseBatch, dropout: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.config.mixed_precision):
            mu, logvar = encoder(batch, dropout, self.noise)
        return mu.float(), logvar.float()  # the KL and the prior cache are float32

    @torch.no_grad()
    def _refresh_prior(self, encoder: Encoder, order: np.ndarray) -> None:
        for rows, batch in self.data.iterate(order, max(self.config.batch_size, 2000)):
            self.prior_mu[rows], self.prior_logvar[rows] = self._encode(encoder, batch)

    def refresh_stale_prior(self, users: np.ndarray) -> None:
        """q_old for `users` = the current encoder, where the cache does not hold it already."""
        stale = users[~self.prior_fresh[users]]
        if len(stale):
            self.model.eval()
            self._refresh_prior(self.model.encoder, stale)
            self.prior_fresh[stale] = True

    def _encoder_pass(self, users: np.ndarray) -> tuple[torch.Tensor, int]:
        cfg, model = self.config, self.model
        total = torch.zeros((), device=self.device)
        steps = 0
        for rows, batch in self.data.iterate(self.order_rng.permutation(users), cfg.batch_size):
            self.opt_encoder.zero_grad(set_to_none=False)
            mu, logvar = self._encode(model.encoder, batch, cfg.input_dropout)
            z = reparameterize(mu, logvar, self.noise)
            nll = decoder_nll(z, model.decoder, batch, self.workspace)
            prior = composite_prior_log_density(
                z, self.prior_mu[rows], self.prior_logvar[rows], cfg.mixture_weights
            )
            kld = (log_norm_pdf(z, mu, logvar) - prior).sum(-1)
            # beta_u = gamma * |x_u|: the KL weight grows with the user's number of items.
            loss = (cfg.gamma * batch.counts * kld + nll).mean()
            loss.backward()
            self.opt_encoder.step()
            total += loss.detach()
            steps += 1
        return total, steps

    def _decoder_pass(self, users: np.ndarray, fill_prior: bool) -> None:
        cfg, model = self.config, self.model
        for rows, batch in self.data.iterate(self.order_rng.permutation(users), cfg.batch_size):
            self.opt_decoder.zero_grad(set_to_none=False)
            with torch.no_grad():
                mu, logvar = self._encode(model.encoder, batch)
                if fill_prior:
                    self.prior_mu[rows], self.prior_logvar[rows] = mu, logvar
                z = reparameterize(mu, logvar, self.noise)
            loss = decoder_nll(z, model.decoder, batch, self.workspace).mean()
            loss.backward()
            self.opt_decoder.step()

    def epoch(self, users: np.ndarray | None = None) -> float:
        """One epoch over `users` (row indices; None: every row). Returns the mean loss."""
        cfg, model = self.config, self.model
        users = np.arange(self.data.n_rows) if users is None else np.asarray(users, dtype=np.int64)
        self.refresh_stale_prior(users)
        model.train()
        model.decoder.requires_grad_(False)
        total, steps = torch.zeros((), device=self.device), 0
        for _ in range(cfg.encoder_passes):
            pass_total, pass_steps = self._encoder_pass(users)
            total, steps = total + pass_total, steps + pass_steps
        model.decoder.requires_grad_(True)
        model.encoder.requires_grad_(False)
        if cfg.decoder_passes == 0:
            self._refresh_prior(model.encoder, users)
        for i in range(cfg.decoder_passes):
            self._decoder_pass(users, fill_prior=i == cfg.decoder_passes - 1)
        model.encoder.requires_grad_(True)
        model.eval()
        # the encoder changed: only the rows just refilled hold its posterior now
        self.prior_fresh[:] = False
        self.prior_fresh[users] = True
        return float(total) / max(steps, 1)


def _accept_last(history: list[EpochReport], best_trained: EpochReport, last_se: float) -> bool:
    """Keep the last epoch unless it scores below the best trained epoch by more than its SE."""
    return best_trained.ndcg_at_100 - history[-1].ndcg_at_100 <= last_se


def train_recvae(
    train: sp.csr_matrix,
    validation: HeldOut,
    config: RecVAEConfig | None = None,
    *,
    device: str | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    initial_model: RecVAE | None = None,
    epoch_users: Callable[[int], np.ndarray] | None = None,
    keep: str = "best",
    initial_moments: OptimizerMoments | None = None,
) -> TrainResult:
    """Train RecVAE on `train` (users x items), keeping the epoch with the best validation NDCG@100.

    Stops after `config.epochs`, after `config.patience` epochs without improvement, or before an
    epoch that would overrun `config.time_budget_s` (judged by the previous epoch's duration).
    The returned model holds the kept epoch's weights and is in eval mode.

    `device`: "cpu", "cuda", "cuda:N" (None: CUDA when present); CudaUnavailableError when CUDA is
    asked for and absent. `initial_model`: training starts from a copy of its weights; it must
    have `config`'s layer sizes and `train`'s item count (IncompatibleModelError otherwise). It is
    scored first as epoch 0 (`initial_metrics`).

    Two choices an hourly warm run makes (`recvae.train_warm` makes them for you):
    - `epoch_users(epoch)`: the rows of `train` that epoch `epoch` (1-based) trains on (default:
      every row);
    - `keep`: "best" returns the epoch with the best validation NDCG@100, the starting model
      (epoch 0) included; "last" returns the last epoch unless its validation NDCG@100 is below
      the best trained epoch's by more than its standard error (then that epoch), and never the
      starting model.

    `initial_moments`: Adam's state to continue from (with `initial_model`; for its parameters and
    shapes, CheckpointError otherwise). Its CPU tensors become the optimiser's state on a CPU run
    and are updated in place: pass a copy to keep them.
    """
    config = config or RecVAEConfig()
    if config.epochs < 1:
        raise ValueError("config.epochs must be >= 1")
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    train = sp.csr_matrix(train, dtype=np.float32)
    if validation.fold_in.shape[1] != train.shape[1]:
        raise ValueError(f"validation has {validation.fold_in.shape[1]} items, train has {train.shape[1]}")
    if initial_model is not None:
        check_architecture(initial_model, config, n_items=train.shape[1])
        if initial_moments is not None:
            initial_moments.check_fits(initial_model)
    elif initial_moments is not None:
        raise ValueError("initial_moments continue an initial_model; none was given")
    dev = resolve_device(device)
    started = time.perf_counter()
    trainer = _Trainer(train, config, dev, initial_model, initial_moments)
    scorer = _ModelScorer(trainer.model, dev)

    def validate(epoch: int) -> dict[str, float]:
        metrics = evaluate(scorer, validation.fold_in, validation.target, device=dev, with_se=True)
        standard_errors[epoch] = metrics.pop("ndcg@100_se")
        return {k: v for k, v in metrics.items() if not k.endswith("_se")}

    standard_errors: dict[int, float] = {}  # per epoch: the SE of its validation NDCG@100

    history: list[EpochReport] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_metrics: dict[str, float] = {}
    best_epoch, best_ndcg = 0, -1.0
    initial_metrics = None
    if initial_model is not None:
        initial_metrics = validate(0)
        if keep == "best":
            best_metrics, best_ndcg = initial_metrics, initial_metrics["ndcg@100"]
            best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    stop_reason = "epochs"
    last_metrics: dict[str, float] = {}
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        loss = trainer.epoch(epoch_users(epoch) if epoch_users is not None else None)
        t1 = time.perf_counter()
        metrics = last_metrics = validate(epoch)
        t2 = time.perf_counter()
        is_best = metrics["ndcg@100"] > best_ndcg
        if is_best:
            best_ndcg, best_epoch, best_metrics = metrics["ndcg@100"], epoch, metrics
            state = trainer.model.state_dict()
            if best_state is None:
                best_state = {k: v.detach().clone() for k, v in state.items()}
            else:  # reuse the buffers: a fresh copy per improvement would churn memory
                for k, v in state.items():
                    best_state[k].copy_(v)
        seconds = t2 - t0
        report = EpochReport(
            epoch=epoch,
            seconds=seconds,
            loss=loss,
            ndcg_at_100=metrics["ndcg@100"],
            recall_at_20=metrics["recall@20"],
            recall_at_50=metrics["recall@50"],
            best=is_best,
            train_seconds=t1 - t0,
            eval_seconds=t2 - t1,
        )
        history.append(report)
        if on_epoch is not None:
            on_epoch(report)
        if epoch == config.epochs:
            break
        if config.patience is not None and epoch - best_epoch >= config.patience:
            stop_reason = "patience"
            break
        elapsed = time.perf_counter() - started
        if config.time_budget_s is not None and elapsed + seconds > config.time_budget_s:
            stop_reason = "time_budget"
            break

    model = trainer.model
    if keep == "last" and _accept_last(history, history[best_epoch - 1], standard_errors[len(history)]):
        best_epoch, best_metrics = len(history), last_metrics
    elif best_state is not None:
        model.load_state_dict(best_state)
    # Hand back a plain inference model: no gradient buffers, stock first-layer backward.
    model.encoder.fast_input_grad = False
    for p in model.parameters():
        p.grad = None
    model.eval()
    return TrainResult(
        model=model,
        config=config,
        best_epoch=best_epoch,
        best_metrics=best_metrics,
        history=history,
        stop_reason=stop_reason,
        seconds=time.perf_counter() - started,
        device=str(dev),
        initial_metrics=initial_metrics,
        validation_se=standard_errors.get(best_epoch, 0.0),
        moments=_moments(trainer.optimizers),
    )
