"""Run config of the assets (dg.Config): every field has a default that suits hourly GitHub data.

A field whose default is a setting is None here and named in its class's `SETTINGS_DEFAULTS`: the
asset resolves it with the `run_defaults` resource (RunDefaults.fill), so nothing reads the
settings at import.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

import dagster as dg
from pydantic import Field, field_validator

from batchrec_dagster.registry.defaults import MAX_MODEL_AGE_HOURS
from batchrec_dagster.sources.partition_reads import LAYOUTS
from recvae import RecVAEConfig, WarmConfig
from recvae.ann import INDEX_KINDS, IndexParams


def _one_of(field: str, allowed: tuple[str, ...]) -> Any:
    """A validator of `field`: its value is unset or one of `allowed` (a Literal would not make a
    Dagster config type when it may also be None)."""
    def check(cls: type, value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise ValueError(f"{field} {value!r} is not one of {', '.join(allowed)}")
        return value
    return field_validator(field)(classmethod(check))


AutoOrFull = Literal["auto", "full"]


def _auto_or_full(auto: str, full: str) -> Any:
    """A field that is "auto" unless a run asks for "full", described as '"auto": AUTO; "full": FULL.'"""
    return Field(default="auto", description=f'"auto": {auto}; "full": {full}.')


class SourceConfig(dg.Config):
    """How `raw_repositories` reads MongoDB."""

    SETTINGS_DEFAULTS: ClassVar[dict[str, str]] = {"layout": "source_layout"}

    layout: str | None = Field(
        default=None,
        description='"stars" (a stars collection with starred_at) or "embedded" (the older layout: '
                    'star_user_list inside each repository, no per-star time). Default: '
                    'BATCHREC_SOURCE_LAYOUT (settings, "stars" unless set).')
    batch_size: int = Field(default=5000, ge=1, description="Cursor batch size.")
    read: AutoOrFull = _auto_or_full(
        auto="only the hour's stars, merged into the previous hour's snapshot, when that snapshot exists "
             "and was read from the same source (a full read otherwise and at BATCHREC_FULL_RUN_HOUR)",
        full="every star before the hour's end")

    _known_layout = _one_of("layout", LAYOUTS)


class MatrixFilterConfig(dg.Config):
    """What counts as a meaningful repository and user."""

    min_repo_stars: int = Field(
        default=10, ge=0, description="Minimum GitHub star count of a repository (its `stars` field).")
    min_users_per_item: int = Field(
        default=5, ge=1, description="Minimum users per repository in the matrix.")
    min_items_per_user: int = Field(
        default=5, ge=1, description="Minimum repositories per user in the matrix.")


class SplitConfig(dg.Config):
    """Held-out validation users (the Mult-VAE protocol)."""

    validation_users: int = Field(default=1000, ge=1, description="Held-out users, at most.")
    test_users: int = Field(
        default=1000, ge=1, description="Held-out test users, at most: validation picks the epoch, the "
                                        "test users give the model's own `score`.")
    max_validation_fraction: float = Field(
        default=0.2, gt=0, lt=0.5, description="Never hold out more than this share of users (for "
                                               "validation, and as much again for test).")
    holdout_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each held-out user's repositories to score "
                                             "(the rest is folded in).")
    min_heldout_items: int = Field(default=5, ge=2, description="Held-out users need this many items.")
    seed: int | None = Field(
        default=None, description="Seed of which items of a held-out user are scored; default: derived "
                                  "from the partition key. It does not choose the held-out users.")
    holdout_salt: int = Field(
        default=0, ge=0, description="Which users are held out: those with the smallest hash of id and "
                                     "salt, the same every hour, so a warm run never validates or scores "
                                     "on users its starting model trained on. Change it only with a full "
                                     "retrain.")


_PAPER = RecVAEConfig()  # the library keeps the paper's values; the pipeline changes only these:
# batch 200 and gamma 0.02 instead of the paper's 500 and 0.005, because on GitHub stars validation
# chose them on every split (test NDCG@100 0.227 against 0.211 at 150 epochs,
# benchmarks/results/recvae.md): with ~1.5k training users, batch 500 gives 4 updates per pass.
PIPELINE_TRAINING = {"batch_size": 200, "gamma": 0.02, "epochs": 150, "patience": 20}


# A warm run (recvae.train_warm) trains the users whose stars changed this hour, everyone who
# starred a new repository, and half as many other users as a replay sample, each epoch: the cost
# of an epoch follows the hour's change, not the history. At the demo's 1.15M stars an hour
# changes ~6.7k of 40k users; with a replay of 1.0 a loaded 2-core machine fit only 3 of 8 epochs
# into the budget (benchmarks/results/hourly_cost.md), 0.5 trains a quarter fewer users per epoch.
# Five epochs of one encoder pass and one decoder pass, continuing Adam's moments from the
# starting model's checkpoint: passes beyond what the hour's change needs re-fit the unchanged
# stars and over-fit them, the encoder most (it sees each row three times an epoch in a full run).
# Simulated GitHub hours, 5 seeds, warm H+3 against a full retrain
# (benchmarks/results/warm_hours_epochs.md): NDCG@100 0.990x with one encoder pass, 0.981x with
# three; 12 epochs of three passes 0.976x (3 seeds). No patience: the last epoch is kept unless it
# fell by more than its standard error. The budget keeps a warm hour within 3 minutes on 2 cores.
# The starting model's weight matrices are scaled by 0.9 first ("shrink and perturb", without the
# noise): a converged model continued as it is over-fits the stars it already knew, and a slightly
# shrunk one re-fits them with the hour's (docs/recvae.md; 0.8 and below lose more than 5 epochs
# win back).
# The overlap threshold: hour to hour nearly all repositories carry over; under 90% the data
# changed wholesale (a new import, other filters) and a model from scratch is the sounder start.
WARM_TRAINING = {"epochs": 5, "encoder_passes": 1, "patience": None, "time_budget_s": 150.0,
                 "min_vocabulary_overlap": 0.9, "replay_ratio": 0.5, "min_epoch_users": 2000, "shrink": 0.9}


class TrainingConfig(dg.Config):
    """RecVAE hyper-parameters and the time budget that keeps an hourly run inside its hour.

    Defaults: the paper's (recvae.RecVAEConfig) except PIPELINE_TRAINING, tuned on GitHub stars;
    the device and the index's from the settings (SETTINGS_DEFAULTS).
    """

    SETTINGS_DEFAULTS: ClassVar[dict[str, str]] = {
        "device": "training_device", "ann_min_items": "ann_min_items", "ann_index": "ann_index_kind",
        "ann_recall_k": "ann_recall_k", "ann_min_recall": "ann_min_recall", "ann_ef_search": "ann_ef_search",
        "ann_nprobe": "ann_nprobe"}

    epochs: int = Field(default=PIPELINE_TRAINING["epochs"], ge=1)
    time_budget_s: float | None = Field(
        default=2400.0, description="Stop before an epoch that would overrun this (seconds of training).")
    patience: int | None = Field(default=PIPELINE_TRAINING["patience"],
                                 description="Stop after this many epochs without improvement.")
    hidden_dim: int = Field(default=_PAPER.hidden_dim, ge=1)
    latent_dim: int = Field(default=_PAPER.latent_dim, ge=1)
    batch_size: int = Field(default=PIPELINE_TRAINING["batch_size"], ge=1)
    learning_rate: float = Field(default=_PAPER.learning_rate, gt=0)
    gamma: float = Field(default=PIPELINE_TRAINING["gamma"], ge=0)
    input_dropout: float = Field(default=_PAPER.input_dropout, ge=0, lt=1)
    encoder_passes: int = Field(default=_PAPER.encoder_passes, ge=1)
    decoder_passes: int = Field(default=_PAPER.decoder_passes, ge=0)
    seed: int = _PAPER.seed
    device: str | None = Field(default=None,
                               description='"cpu", "cuda"; default: BATCHREC_TRAINING_DEVICE, else cuda '
                                           'when available.')
    preview_k: int = Field(default=10, ge=1, description="Rows of the top-k preview in the metadata.")
    # -- warm hourly runs (batchrec_dagster.training.start)
    mode: AutoOrFull = _auto_or_full(
        auto="continue the newest compatible registered model for a few epochs (warm), except at "
             "BATCHREC_FULL_RUN_HOUR or when no model is compatible", full="train from scratch")
    warm_epochs: int = Field(default=WARM_TRAINING["epochs"], ge=1,
                             description="Epochs of a warm run, at most.")
    warm_encoder_passes: int = Field(
        default=WARM_TRAINING["encoder_passes"], ge=1,
        description="Encoder passes per warm epoch (a full run makes `encoder_passes`).")
    warm_learning_rate: float | None = Field(
        default=None, gt=0, description="Adam's learning rate in a warm run (default: `learning_rate`).")
    warm_shrink: float = Field(
        default=WARM_TRAINING["shrink"], gt=0, le=1,
        description="The starting model's weight matrices are scaled by this before a warm run.")
    warm_patience: int | None = Field(
        default=WARM_TRAINING["patience"],
        description="A warm run stops after this many epochs without beating its best trained epoch "
                    "(default: none; the last epoch is kept unless it fell by more than its standard error).")
    warm_time_budget_s: float | None = Field(
        default=WARM_TRAINING["time_budget_s"], description="Training seconds of a warm run, at most.")
    warm_replay_ratio: float = Field(
        default=WARM_TRAINING["replay_ratio"], ge=0,
        description="Users who did not change, drawn afresh each warm epoch, per user who did.")
    warm_min_epoch_users: int = Field(
        default=WARM_TRAINING["min_epoch_users"], ge=0,
        description="A warm epoch trains at least this many users (all of them when there are fewer).")
    min_vocabulary_overlap: float = Field(
        default=WARM_TRAINING["min_vocabulary_overlap"], gt=0, le=1,
        description="Share of this hour's repositories the starting model must know.")
    warm_max_age_hours: float = Field(
        # the registry's freshness: a model too old to serve is too old to continue
        default=MAX_MODEL_AGE_HOURS, gt=0,
        description="Start only from models whose data ends at most this long before the hour's end.")
    # -- the approximate top-k index (defs/assets/ann_index.py, docs/serving.md)
    ann_min_items: int | None = Field(default=None, ge=1,
                                      description="Build a top-k index for catalogs of at least this many "
                                                  "repositories (smaller ones are served exactly). Default: "
                                                  "BATCHREC_ANN_MIN_ITEMS.")
    ann_index: str | None = Field(
        default=None, description="The index type (faiss, inner product): auto, hnsw, ivf, ivfpq or flat. "
                                  "Default: BATCHREC_ANN_INDEX.")
    ann_recall_k: int | None = Field(default=None, ge=1,
                                     description="k of the index's recall@k against exact scoring. Default: "
                                                 "BATCHREC_ANN_RECALL_K.")

    ann_min_recall: float | None = Field(default=None, ge=0, le=1,
                                         description="An HNSW index below this recall@k is measured again "
                                                     "with a wider query beam, which servers then use. "
                                                     "Default: BATCHREC_ANN_MIN_RECALL.")
    ann_ef_search: int | None = Field(default=None, ge=1,
                                      description="HNSW query beam width the recall is measured with. "
                                                  "Default: BATCHREC_ANN_EF_SEARCH.")
    ann_nprobe: int | None = Field(default=None, ge=1,
                                   description="IVF lists searched per query when the recall is measured. "
                                               "Default: BATCHREC_ANN_NPROBE.")

    _known_index = _one_of("ann_index", INDEX_KINDS)

    def index_params(self) -> IndexParams:
        return IndexParams(kind=self.ann_index, ef_search=self.ann_ef_search, nprobe=self.ann_nprobe)

    def warm_recvae_config(self) -> RecVAEConfig:
        """The library's config for a warm run: the same model, fewer epochs, a tighter budget.
        `epochs` and `time_budget_s` stay upper bounds (`batchrec materialize --epochs 2` means it)."""
        budgets = [b for b in (self.warm_time_budget_s, self.time_budget_s) if b is not None]
        return replace(self.recvae_config(), epochs=min(self.warm_epochs, self.epochs),
                       encoder_passes=self.warm_encoder_passes, patience=self.warm_patience,
                       learning_rate=self.warm_learning_rate or self.learning_rate,
                       time_budget_s=min(budgets) if budgets else None)

    def warm_config(self) -> WarmConfig:
        """How a warm run spends its epochs: `recvae.train_warm(..., warm=this)`."""
        return WarmConfig(replay_ratio=self.warm_replay_ratio, min_epoch_users=self.warm_min_epoch_users,
                          shrink=self.warm_shrink)

    def recvae_config(self) -> RecVAEConfig:
        """The library's config with these values (fields the library does not know are left out)."""
        known = set(RecVAEConfig.__dataclass_fields__)
        return RecVAEConfig(**{k: v for k, v in self.model_dump().items() if k in known})
