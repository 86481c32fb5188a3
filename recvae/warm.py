"""Warm start: a RecVAE for a new item vocabulary, initialised from a model trained on an older one.

Per item of the new vocabulary:

- kept (known to the previous model): its encoder input row (the first layer's column for that
  item; stored as a row because the layer is an embedding_bag), its decoder row and its decoder
  bias are copied exactly;
- new: encoder input row zero, decoder row zero, decoder bias at the item's log-frequency on the
  previous model's logit scale (below);
- dropped (known before, absent now): removed with its row and bias.

Every other parameter (the encoder's dense layers, LayerNorms, heads) is copied as is. Nothing is
random, so the result does not depend on a seed.

Why zero rows. The encoder sums the input rows of a user's items (after L2 normalisation): a zero
row leaves a new item out of the user's code until training has learnt what it means, whereas a
row drawn like a fresh model's adds noise to every user who starred it, under weights tuned for
the trained rows. The gradient of a zero row is still the sum over the users who starred it, so
it learns from the first step and new items do not stay tied to each other. A zero decoder row
gives the new item the same logit for every user: its bias.

Why that bias. With a zero decoder row the multinomial likelihood's maximiser for an item's
logit is log(its count) plus a constant shared by all items (the softmax's normaliser), so a new
item starts at its popularity prior instead of a random rank. On a trained model that law holds
for an item's *mean logit over users*, b_i + w_i . z_mean, not for its bias alone: on GitHub stars
the mean logit follows log(count) with slope 0.98, the bias with slope 0.05 (the decoder rows carry
the popularity). So, given the new training matrix, the new item's bias is
log(count) + median over kept items of (mean logit - log count), with z_mean the mean code of the
training users under the warm-started encoder (one forward pass over up to 4096 of them). Without
a matrix, new items get the mean of the kept biases (z_mean taken as 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recvae.data import normalize_ids
from recvae.model import RecVAE, RecVAEConfig
from recvae.sparse import SparseBatch

# Below this share of the new vocabulary known to the previous model, a full retrain is advised.
# benchmarks/bench_warm.py (GitHub stars, 10 warm epochs): overlap 0.97 matched the full retrain,
# 0.80 reached 0.94x of it and 0.50 0.88x, against a 0.99x target. The caller may override.
DEFAULT_MIN_OVERLAP = 0.9


class IncompatibleModelError(ValueError):
    """The model cannot seed this training run: different architecture or item count."""


@dataclass(frozen=True)
class VocabularyMap:
    previous_index: np.ndarray  # [n_new] int64: each new item's row in the previous model, -1 if new
    n_previous: int

    @property
    def kept(self) -> int:
        return int((self.previous_index >= 0).sum())

    @property
    def new(self) -> int:
        return int(len(self.previous_index) - self.kept)

    @property
    def dropped(self) -> int:
        return self.n_previous - self.kept

    @property
    def overlap(self) -> float:
        """Share of the new vocabulary that the previous model knew."""
        return self.kept / len(self.previous_index) if len(self.previous_index) else 0.0


@dataclass(frozen=True)
class WarmStartReport:
    kept: int
    new: int
    dropped: int
    overlap: float
    new_item_bias: str  # "log_frequency" | "mean_kept_bias"

    def to_dict(self) -> dict[str, int | float | str]:
        return asdict(self)


@dataclass(frozen=True)
class Compatibility:
    compatible: bool
    reason: str
    kept: int = 0
    new: int = 0
    dropped: int = 0
    overlap: float = 0.0

    def to_dict(self) -> dict[str, bool | str | int | float]:
        return asdict(self)


def _unique_ids(ids: np.ndarray, name: str) -> np.ndarray:
    ids = normalize_ids(np.asarray(ids).reshape(-1))
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{name} contains duplicate ids")
    return ids


def map_vocabulary(previous_item_ids: np.ndarray, new_item_ids: np.ndarray) -> VocabularyMap:
    """Where each new item sits in the previous vocabulary (-1: new). Ids must be unique and of
    the same kind (integers or strings) on both sides."""
    prev = _unique_ids(previous_item_ids, "previous_item_ids")
    new = _unique_ids(new_item_ids, "new_item_ids")
    if len(prev) and len(new) and (prev.dtype.kind == "U") != (new.dtype.kind == "U"):
        raise ValueError(f"item ids differ in kind: previous {prev.dtype}, new {new.dtype}")
    index = np.full(len(new), -1, dtype=np.int64)
    if len(prev) and len(new):
        order = np.argsort(prev, kind="stable")
        pos = np.searchsorted(prev[order], new).clip(0, len(prev) - 1)
        found = prev[order][pos] == new
        index[found] = order[pos[found]]
    return VocabularyMap(previous_index=index, n_previous=len(prev))


# The parameters with one row per item; every other parameter is shared by all items.
PER_ITEM = ("encoder.input_weight", "decoder.weight", "decoder.bias")


def map_item_rows(tensors: dict[str, torch.Tensor], vocab: VocabularyMap) -> dict[str, torch.Tensor]:
    """`tensors` (a state dict, or optimiser moments keyed the same way) over the new vocabulary:
    per-item tensors get the kept items' rows copied and zero rows for new items (dropped items'
    rows are left out); every other tensor is copied as is. CPU tensors."""
    kept = torch.from_numpy(vocab.previous_index >= 0)
    source = torch.from_numpy(vocab.previous_index[vocab.previous_index >= 0])
    out = {}
    for name, value in tensors.items():
        value = value.detach().cpu()
        if name in PER_ITEM:  # new tensors already: no copy of the largest ones on top
            out[name] = value.new_zeros((len(vocab.previous_index), *value.shape[1:]))
            out[name][kept] = value[source]
        else:
            out[name] = value.clone()
    return out


def model_dims(model: RecVAE) -> tuple[int, int, int]:
    """(n_items, hidden_dim, latent_dim) read from the weights themselves, not the config."""
    n_items, hidden = model.encoder.input_weight.shape
    return int(n_items), int(hidden), int(model.decoder.weight.shape[1])


def check_architecture(model: RecVAE, config: RecVAEConfig, n_items: int | None = None) -> None:
    """Raise IncompatibleModelError unless `model` has `config`'s layer sizes (and `n_items`)."""
    if not isinstance(model, RecVAE):
        raise IncompatibleModelError(f"expected a RecVAE, got {type(model).__name__}")
    items, hidden, latent = model_dims(model)
    wanted = (config.hidden_dim, config.latent_dim)
    if (hidden, latent) != wanted:
        raise IncompatibleModelError(
            f"architecture mismatch: the model has hidden_dim={hidden}, latent_dim={latent}; "
            f"the config asks for hidden_dim={wanted[0]}, latent_dim={wanted[1]}"
        )
    if n_items is not None and items != n_items:
        raise IncompatibleModelError(
            f"item count mismatch: the model has {items} items, the training matrix {n_items} "
            "columns (map the vocabulary with warm_start first)"
        )


def check_compatibility(
    previous_model: RecVAE,
    previous_item_ids: np.ndarray,
    new_item_ids: np.ndarray,
    config: RecVAEConfig | None = None,
    *,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> Compatibility:
    """Whether `warm_start` is advisable: same architecture as `config` (default: the previous
    model's own) and at least `min_overlap` of the new vocabulary known to the previous model.
    Never raises for an incompatible model; `reason` says why."""
    try:
        check_architecture(previous_model, config or previous_model.config)
        if len(previous_item_ids) != model_dims(previous_model)[0]:
            raise IncompatibleModelError(
                f"previous_item_ids has {len(previous_item_ids)} ids for a model of "
                f"{model_dims(previous_model)[0]} items"
            )
        vocab = map_vocabulary(previous_item_ids, new_item_ids)
    except ValueError as exc:  # IncompatibleModelError included
        return Compatibility(False, str(exc))
    counts = dict(kept=vocab.kept, new=vocab.new, dropped=vocab.dropped, overlap=vocab.overlap)
    if vocab.overlap < min_overlap:
        return Compatibility(
            False, f"vocabulary overlap {vocab.overlap:.3f} is below {min_overlap:.3f}", **counts
        )
    return Compatibility(True, f"vocabulary overlap {vocab.overlap:.3f} >= {min_overlap:.3f}", **counts)


# The mean code is an average: a few thousand users pin it down (its standard error shrinks as
# 1/sqrt(n)), and encoding every user would cost a good part of an epoch on large data.
MEAN_CODE_USERS = 4096


def _mean_code(model: RecVAE, train: sp.csr_matrix, batch_size: int = 2048) -> torch.Tensor:
    """Mean posterior mean over (a fixed-seed sample of) the users of `train` that have items."""
    users = np.flatnonzero(np.diff(train.indptr) > 0)
    if len(users) > MEAN_CODE_USERS:
        users = np.sort(np.random.default_rng(0).choice(users, MEAN_CODE_USERS, replace=False))
    train = train[users]
    total = torch.zeros(model.decoder.weight.shape[1], dtype=torch.float64)
    for start in range(0, train.shape[0], batch_size):
        mu, _ = model.encoder(SparseBatch.from_csr(train[start : start + batch_size], "cpu"))
        total += mu.sum(0, dtype=torch.float64)
    return (total / max(train.shape[0], 1)).float()


def _set_new_item_bias(model: RecVAE, is_kept: torch.Tensor, train: sp.csr_matrix | None) -> str:
    """Fill the decoder bias of new items (rows where `is_kept` is False); returns the method."""
    bias, weight = model.decoder.bias, model.decoder.weight
    if train is None:
        bias[~is_kept] = bias[is_kept].mean()
        return "mean_kept_bias"
    counts = torch.from_numpy(np.asarray(train.sum(axis=0), dtype=np.float64).reshape(-1))
    # Counts below 1 (an item without a training star) are read as 1: log 0 would be -inf.
    log_counts = counts.clamp_min(1.0).log().float()
    mean_logit = bias[is_kept] + weight[is_kept] @ _mean_code(model, train)
    offset = (mean_logit - log_counts[is_kept]).median()
    bias[~is_kept] = log_counts[~is_kept] + offset
    return "log_frequency"


@torch.no_grad()
def warm_start(
    previous_model: RecVAE,
    previous_item_ids: np.ndarray,
    new_item_ids: np.ndarray,
    *,
    train: sp.csr_matrix | None = None,
    config: RecVAEConfig | None = None,
) -> tuple[RecVAE, WarmStartReport]:
    """A new CPU RecVAE over `new_item_ids`, initialised from `previous_model` (see the module doc).

    `train`: the new training matrix (users x `new_item_ids`); it places new items at their
    log-frequency. `config` (default: the previous model's) must have the same layer sizes.
    Raises IncompatibleModelError for another architecture or id count, ValueError when no item
    is shared. Pass the result to `train_recvae(train, ..., initial_model=model)`.
    """
    config = config or previous_model.config
    check_architecture(previous_model, config)
    n_previous = model_dims(previous_model)[0]
    if len(previous_item_ids) != n_previous:
        raise IncompatibleModelError(
            f"previous_item_ids has {len(previous_item_ids)} ids for a model of {n_previous} items"
        )
    vocab = map_vocabulary(previous_item_ids, new_item_ids)
    if vocab.kept == 0:
        raise ValueError("the previous model shares no item with the new vocabulary: train from scratch")
    if train is not None:
        train = sp.csr_matrix(train, dtype=np.float32)
        if train.shape[1] != len(vocab.previous_index):
            raise ValueError(f"train has {train.shape[1]} columns for {len(vocab.previous_index)} items")

    model = RecVAE(len(vocab.previous_index), config)
    model.load_state_dict(map_item_rows(previous_model.state_dict(), vocab))
    model.eval()
    how = _set_new_item_bias(model, torch.from_numpy(vocab.previous_index >= 0), train)
    return model, WarmStartReport(vocab.kept, vocab.new, vocab.dropped, vocab.overlap, how)
