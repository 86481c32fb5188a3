"""Hourly warm training: continue a model on a newer snapshot at a cost that follows the change.

`train_warm` is the one call. From the previous model and this hour's training matrix it

0. scales a copy of the previous model's weight matrices by `shrink` (1.0: as it is). Continued
   as it is, a converged model over-fits the stars it already knew, hour after hour; a slightly
   shrunk one re-fits them along with the hour's ("shrink and perturb", Ash & Adams 2020);
1. maps the vocabulary (`warm_start`: kept rows copied, new items at zero rows and their
   log-frequency bias, dropped items removed);
2. places each new item's decoder row where the model already puts items like it: the decoder
   row of a kept item is close to a linear function of the mean code of the users who starred it,
   so a ridge fit of that map on the kept items, applied to the new items' users, gives every new
   item a personalised row before the first step (`fit_new_rows`);
3. trains epochs on the *focus* users (those whose stars changed since the previous model, and
   everyone who starred a new item) plus a fresh replay sample of the other users each epoch
   (`replay_ratio` per focus user, at least `min_epoch_users` in all), so an epoch costs what the
   hour changed, not what the history holds, while the replay keeps the rest of the model from
   drifting towards the hour's users;
4. continues Adam's moments from the previous run when they are given (`moments`, from its
   training checkpoint: recvae.checkpoint says why), mapped to the new vocabulary like the weights;
5. keeps the last epoch unless its validation NDCG@100 fell below the best trained epoch's by
   more than its standard error. The starting model is scored (epoch 0) but never returned: what
   the hour taught is not thrown away for a difference the validation users cannot resolve.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
import torch

from recvae.checkpoint import OptimizerMoments
from recvae.data import HeldOut
from recvae.metrics import evaluate
from recvae.model import RecVAE, RecVAEConfig
from recvae.sparse import SparseBatch
from recvae.train import EpochReport, TrainResult, _ModelScorer, train_recvae
from recvae.warm import WarmStartReport, map_vocabulary, warm_start

# The kept items' map from mean user code to decoder row is fitted on a fixed-seed sample of the
# users: 16k users estimate a latent x latent map well, and encoding every user would make the
# fit's cost grow with the history.
FIT_USERS = 16384
RIDGE = 1e-2  # relative to the mean eigenvalue of the codes' Gram matrix; the fit is well posed


@dataclass(frozen=True)
class WarmConfig:
    """How a warm run spends its epochs (`RecVAEConfig.epochs` says how many)."""

    replay_ratio: float = 1.0    # replay users drawn per focus user, afresh each epoch
    min_epoch_users: int = 2000  # an epoch trains at least this many users (every user if fewer)
    fit_new_rows: bool = True    # place new items' decoder rows by the kept items' code -> row map
    shrink: float = 1.0          # the previous model's weight matrices are scaled by this first

    def __post_init__(self) -> None:
        if self.replay_ratio < 0 or self.min_epoch_users < 0:
            raise ValueError("replay_ratio and min_epoch_users must be >= 0")
        if not 0 < self.shrink <= 1:
            raise ValueError("shrink must be in (0, 1]")


@dataclass(frozen=True)
class WarmReport:
    """What a warm run trained and what it kept (JSON-ready with `to_dict`)."""

    kept_items: int
    new_items: int
    dropped_items: int
    overlap: float
    new_items_trained: int      # new items whose decoder row training changed
    new_item_rows: str          # "fitted" | "zero": how new decoder rows started
    changed_users: int          # training users whose stars changed since the previous model
    focus_users: int            # changed users plus every user who starred a new item
    users_per_epoch: int        # focus users plus the replay sample
    users_trained: int          # distinct users trained in any epoch
    training_users: int         # rows of the training matrix
    initial_validation_ndcg: float   # the previous model, mapped (new items at their popularity)
    validation_ndcg: float           # the returned epoch
    validation_ndcg_se: float        # its standard error over validation users
    kept_epoch: int
    weights_changed: bool
    optimizer_moments: str = "fresh"  # "carried": Adam continued from the previous run's moments

    def to_dict(self) -> dict[str, int | float | str | bool]:
        return asdict(self)


@dataclass
class WarmResult:
    training: TrainResult
    report: WarmReport
    start: WarmStartReport


def _codes(model: RecVAE, matrix: sp.csr_matrix, batch_size: int = 2048) -> np.ndarray:
    """Posterior means of the rows of `matrix` under the model's encoder (float64)."""
    out = np.zeros((matrix.shape[0], model.decoder.weight.shape[1]))
    with torch.no_grad():
        for start in range(0, matrix.shape[0], batch_size):
            mu, _ = model.encoder(SparseBatch.from_csr(matrix[start : start + batch_size], "cpu"))
            out[start : start + len(mu)] = mu.double().numpy()
    return out


def _item_mean_codes(matrix: sp.csr_matrix, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean code of each column's users [n_items, latent], users per column)."""
    counts = np.asarray(matrix.sum(axis=0), dtype=np.float64).reshape(-1)
    sums = np.asarray(matrix.T @ codes)
    return sums / np.maximum(counts, 1.0)[:, None], counts


@torch.no_grad()
def fit_new_item_rows(model: RecVAE, is_new: np.ndarray, train: sp.csr_matrix, seed: int = 0) -> float:
    """Give new items (columns where `is_new`) the decoder rows and biases that the kept items'
    code -> row map predicts from their users; returns that map's R^2 on the kept items."""
    train = sp.csr_matrix(train, dtype=np.float32)
    rows = np.flatnonzero(np.diff(train.indptr) > 0)
    sample = rows
    if len(rows) > FIT_USERS:
        sample = np.sort(np.random.default_rng(seed).choice(rows, FIT_USERS, replace=False))
    codes = _codes(model, train[sample])
    z_mean = codes.mean(axis=0)
    kept_means, kept_counts = _item_mean_codes(train[sample], codes - z_mean)
    weight = model.decoder.weight.double().numpy()
    bias = model.decoder.bias.double().numpy()
    fit_items = np.flatnonzero(~is_new & (kept_counts >= 3))
    x, y = kept_means[fit_items], weight[fit_items]
    gram = x.T @ x
    ridge = RIDGE * np.trace(gram) / len(gram)
    mapping = np.linalg.solve(gram + ridge * np.eye(len(gram)), x.T @ y)
    residual = y - x @ mapping
    r2 = 1.0 - float((residual**2).sum() / max(((y - y.mean(axis=0)) ** 2).sum(), 1e-12))
    # every user of a new item, not a sample: these few rows decide the new items' places
    new_users = np.flatnonzero(new_item_users(train, is_new))
    new_means, _ = _item_mean_codes(train[new_users], _codes(model, train[new_users]) - z_mean)
    new_rows = new_means[is_new] @ mapping
    # the bias keeps the item's mean logit (b + w . z_mean) at log(count) on the kept items' scale
    log_counts = np.log(np.maximum(np.asarray(train.sum(axis=0)).reshape(-1), 1.0))
    kept = ~is_new
    offset = np.median(bias[kept] + weight[kept] @ z_mean - log_counts[kept])
    model.decoder.weight[torch.from_numpy(is_new)] = torch.from_numpy(new_rows).float()
    model.decoder.bias[torch.from_numpy(is_new)] = torch.from_numpy(
        log_counts[is_new] + offset - new_rows @ z_mean).float()
    return r2


def focus_users(train: sp.csr_matrix, is_new: np.ndarray, changed_users: np.ndarray | None) -> np.ndarray:
    """Rows a warm epoch always trains: the changed users and every user who starred a new item
    (every row when `changed_users` is None: what changed is unknown)."""
    n_users = train.shape[0]
    if changed_users is None:
        return np.arange(n_users)
    changed = np.asarray(changed_users)
    mask = np.zeros(n_users, dtype=bool)
    if changed.dtype == bool:
        if changed.shape != (n_users,):
            raise ValueError(f"changed_users mask has shape {changed.shape}, train has {n_users} rows")
        mask |= changed
    elif len(changed):
        if changed.min() < 0 or changed.max() >= n_users:
            raise ValueError("changed_users holds row indices outside the training matrix")
        mask[changed] = True
    if is_new.any():
        mask |= new_item_users(train, is_new)
    return np.flatnonzero(mask)


def new_item_users(train: sp.csr_matrix, is_new: np.ndarray) -> np.ndarray:
    """Mask of the rows of `train` with a star on a column where `is_new`."""
    return np.asarray(sp.csr_matrix(train)[:, np.flatnonzero(is_new)].sum(axis=1)).reshape(-1) > 0


def epoch_schedule(n_users: int, focus: np.ndarray, warm: WarmConfig, seed: int
                   ) -> Callable[[int], np.ndarray]:
    """epoch -> the rows it trains: `focus` plus a replay sample of the others, drawn per epoch
    from (seed, epoch), so a rerun trains the same users."""
    others = np.setdiff1d(np.arange(n_users), focus, assume_unique=True)
    n_replay = max(math.ceil(warm.replay_ratio * len(focus)), warm.min_epoch_users - len(focus))
    n_replay = min(len(others), max(n_replay, 0))

    def users(epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch])
        return np.sort(np.concatenate([focus, rng.choice(others, n_replay, replace=False)]))

    return users


def parent_validation_ndcg(previous_model: RecVAE, previous_item_ids: np.ndarray, item_ids: np.ndarray,
                           validation: HeldOut, train: sp.csr_matrix) -> float:
    """Validation NDCG@100 of the previous model as it would serve this hour: mapped to this hour's
    vocabulary, new items at their log-frequency (no placed rows, no shrink, no training)."""
    mapped, _ = warm_start(previous_model, previous_item_ids, item_ids, train=train)
    mapped.eval()
    scorer = _ModelScorer(mapped, torch.device("cpu"))
    return float(evaluate(scorer, validation.fold_in, validation.target, ks=(100,))["ndcg@100"])


def _shrunk(model: RecVAE, factor: float) -> RecVAE:
    """A copy with every weight matrix scaled by `factor` (biases and norms kept)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(factor)
    return model


def _changed(before: dict[str, torch.Tensor], after: RecVAE) -> bool:
    return any(not torch.equal(before[k], v.detach().cpu()) for k, v in after.state_dict().items())


def train_warm(
    previous_model: RecVAE,
    previous_item_ids: np.ndarray,
    train: sp.csr_matrix,
    item_ids: np.ndarray,
    validation: HeldOut,
    config: RecVAEConfig,
    *,
    changed_users: np.ndarray | None = None,
    warm: WarmConfig | None = None,
    device: str | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    moments: OptimizerMoments | None = None,
) -> WarmResult:
    """Continue `previous_model` (over `previous_item_ids`) on `train` (users x `item_ids`).

    `changed_users`: rows of `train` (indices or a boolean mask) whose stars changed since the
    previous model's data; None trains every user each epoch. `config` is the run's RecVAEConfig
    (epochs, time budget, patience as upper bounds); `warm` how the epochs are spent. Raises
    IncompatibleModelError / ValueError as `warm_start` does. `moments`: Adam's state at the end
    of the previous model's training (over `previous_item_ids`), None for fresh moments;
    CheckpointError when they do not fit the previous model. See the module doc.
    """
    warm = warm or WarmConfig()
    train = sp.csr_matrix(train, dtype=np.float32)
    parent_ndcg = parent_validation_ndcg(previous_model, previous_item_ids, item_ids, validation, train)
    if warm.shrink != 1.0:
        previous_model = _shrunk(previous_model, warm.shrink)
    model, start = warm_start(previous_model, previous_item_ids, item_ids, train=train, config=config)
    is_new = map_vocabulary(previous_item_ids, item_ids).previous_index < 0
    rows_how = "zero"
    if warm.fit_new_rows and is_new.any() and (~is_new).sum() >= 3 * model.decoder.weight.shape[1]:
        fit_new_item_rows(model, is_new, train, seed=config.seed)
        rows_how = "fitted"
    if moments is not None:
        moments.check_fits(previous_model)
        moments = moments.for_vocabulary(previous_item_ids, item_ids)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    focus = focus_users(train, is_new, changed_users)
    schedule = epoch_schedule(train.shape[0], focus, warm, config.seed)
    trained = np.zeros(train.shape[0], dtype=bool)
    per_epoch: list[int] = []

    def users(epoch: int) -> np.ndarray:
        rows = schedule(epoch)
        trained[rows] = True
        per_epoch.append(len(rows))
        return rows

    result = train_recvae(train, validation, config, device=device, on_epoch=on_epoch, initial_model=model,
                          epoch_users=users, keep="last", initial_moments=moments)
    new_rows = torch.from_numpy(is_new)
    trained_rows = result.model.decoder.weight.detach().cpu()[new_rows]
    moved = (trained_rows != initial["decoder.weight"][new_rows]).any(1)
    n_changed = (train.shape[0] if changed_users is None
                 else int(np.count_nonzero(changed_users)) if np.asarray(changed_users).dtype == bool
                 else len(np.unique(changed_users)))
    report = WarmReport(
        kept_items=start.kept, new_items=start.new, dropped_items=start.dropped, overlap=start.overlap,
        new_items_trained=int(moved.sum()), new_item_rows=rows_how, changed_users=n_changed,
        focus_users=len(focus), users_per_epoch=per_epoch[0], users_trained=int(trained.sum()),
        training_users=int(train.shape[0]),
        initial_validation_ndcg=parent_ndcg,
        validation_ndcg=float(result.best_metrics.get("ndcg@100", 0.0)),
        validation_ndcg_se=result.validation_se, kept_epoch=result.best_epoch,
        weights_changed=_changed(initial, result.model),
        optimizer_moments="fresh" if moments is None else "carried",
    )
    return WarmResult(training=result, report=report, start=start)
