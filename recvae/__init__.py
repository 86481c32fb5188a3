"""RecVAE (Shenbin et al., WSDM 2020) in plain PyTorch + NumPy/SciPy, with data preparation,
metrics, baselines, inference and safe artifacts. No Dagster, MongoDB or GCS needed."""

from recvae.artifact import (
    FORMAT_VERSION,
    Artifact,
    ArtifactError,
    dump_artifact,
    load_artifact,
    load_artifact_file,
)
from recvae.baselines import EASE, Popularity, choose_ease_lambda
from recvae.continual import WarmConfig, WarmReport, WarmResult, train_warm
from recvae.data import (
    HeldOut,
    Interactions,
    Split,
    build_interactions,
    filter_min_counts,
    split_users,
    stable_user_order,
)
from recvae.device import CudaUnavailableError
from recvae.inference import Recommender
from recvae.metrics import Scorer, evaluate, ndcg_at_k, recall_at_k
from recvae.model import RecVAE, RecVAEConfig
from recvae.train import EpochReport, TrainResult, train_recvae
from recvae.warm import (
    DEFAULT_MIN_OVERLAP,
    Compatibility,
    IncompatibleModelError,
    VocabularyMap,
    WarmStartReport,
    check_compatibility,
    map_vocabulary,
    warm_start,
)

__all__ = [
    "DEFAULT_MIN_OVERLAP",
    "FORMAT_VERSION",
    "EASE",
    "Artifact",
    "ArtifactError",
    "Compatibility",
    "CudaUnavailableError",
    "EpochReport",
    "HeldOut",
    "IncompatibleModelError",
    "Interactions",
    "Popularity",
    "RecVAE",
    "RecVAEConfig",
    "Recommender",
    "Scorer",
    "Split",
    "TrainResult",
    "VocabularyMap",
    "WarmConfig",
    "WarmReport",
    "WarmResult",
    "WarmStartReport",
    "build_interactions",
    "check_compatibility",
    "choose_ease_lambda",
    "dump_artifact",
    "evaluate",
    "filter_min_counts",
    "load_artifact",
    "load_artifact_file",
    "map_vocabulary",
    "ndcg_at_k",
    "recall_at_k",
    "split_users",
    "stable_user_order",
    "train_recvae",
    "train_warm",
    "warm_start",
]
