"""Where `recvae_model` starts: from scratch (a full retrain) or from the newest compatible model.

A warm hourly run continues training the newest registered model whose data ends no later than
this hour's end (never a model that saw later stars: a backfilled hour must not learn from the
future) and at most `max_age` before it. A candidate is compatible when

- it is a `recvae` model with this run's architecture (hidden and latent sizes),
- its artifact is readable: the bytes match the registry's size and sha256
  (storage.read_verified) and load as an artifact (recvae.load_artifact),
- at least `min_overlap` of this hour's repositories are known to it (the vocabulary overlap;
  recvae.check_compatibility).

The newest few candidates are tried in order; the first compatible one is used. A full retrain
happens at the daily full-run hour (BATCHREC_FULL_RUN_HOUR), when the run config asks for one,
and when no candidate is compatible. Without MongoDB the registry query fails the step before any
training (tests/sources/test_mongo_down.py). `Start.record()` says which, why, and from which
model; it goes into the asset metadata, the registry entry and the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from pymongo.database import Database

from batchrec_dagster.registry.defaults import MODEL_KIND
from batchrec_dagster.registry.models import warm_start_candidates
from batchrec_dagster.storage.blobs import ArtifactMismatchError, BlobNotFoundError, BlobStore, read_verified
from recvae import ArtifactError, Recommender, RecVAE, RecVAEConfig, check_compatibility, load_artifact

MAX_CANDIDATES = 3  # the newest few: an older model is a worse start than a retrain anyway


@dataclass
class Start:
    mode: str                                   # "warm" | "full"
    reason: str
    model: RecVAE | None = None                 # warm: the registered model to continue
    item_ids: np.ndarray | None = None          # warm: that model's item vocabulary
    source: dict[str, Any] | None = None        # warm: the registry entry it started from
    vocabulary: dict[str, Any] = field(default_factory=dict)   # warm: kept / new / dropped / overlap
    passed_over: list[str] = field(default_factory=list)       # candidates found unusable, and why

    def metadata(self) -> dict[str, Any]:
        """Flat values for the asset's metadata (numbers plot across partitions in Dagit)."""
        out: dict[str, Any] = {"training_mode": self.mode, "training_mode_reason": self.reason}
        if self.source:
            out["warm_start_from"] = self.source["file_name"]
            out["warm_start_from_partition"] = str(self.source["partition_key"])
            out.update({f"vocabulary_{k}": v for k, v in self.vocabulary.items()
                        if isinstance(v, int | float)})
        return out

    def record(self) -> dict[str, Any]:
        """JSON-ready: the mode, why, the model started from, the vocabulary mapping."""
        return {"mode": self.mode, "reason": self.reason, "from": self.source,
                "vocabulary": self.vocabulary, "passed_over": list(self.passed_over)}


def _source(entry: dict[str, Any]) -> dict[str, Any]:
    return {"file_name": entry["file_name"], "run_id": entry["run_id"],
            "partition_key": entry.get("partition_key"), "data_end": entry["data_end"].isoformat(),
            "score": float(entry["score"]), "sha256": entry["sha256"],
            "training_mode": entry.get("training_mode", "full"),
            "training_checkpoint": entry.get("training_checkpoint")}


def _try_candidate(entry: dict[str, Any], store: BlobStore, config: RecVAEConfig, item_ids: np.ndarray,
                   min_overlap: float) -> tuple[Recommender | None, dict[str, Any], str]:
    """(the registered model, vocabulary report, '') when compatible, else (None, {}, why not)."""
    try:
        data = read_verified(store, entry["file_name"], size_bytes=entry.get("size_bytes"),
                             sha256=entry.get("sha256"))
        artifact = load_artifact(data)
    except (BlobNotFoundError, ArtifactMismatchError, ArtifactError) as exc:
        return None, {}, f"artifact not readable: {exc}"
    kind = artifact.extra.get("model_kind", MODEL_KIND)
    if kind != MODEL_KIND:
        return None, {}, f"artifact holds a {kind!r} model"
    previous = artifact.recommender
    verdict = check_compatibility(previous.model, previous.item_ids, item_ids, config,
                                  min_overlap=min_overlap)
    if not verdict.compatible:
        return None, {}, verdict.reason
    vocabulary = {k: v for k, v in verdict.to_dict().items() if k not in ("compatible", "reason")}
    return previous, vocabulary, ""


def choose_start(db: Database, store: BlobStore, *, window_end: datetime, requested: str,
                 daily_full: str | None, config: RecVAEConfig, item_ids: np.ndarray,
                 min_overlap: float, max_age: timedelta) -> Start:
    """Full or warm for this hour's training data (`train`, columns `item_ids`), and why."""
    if requested == "full":
        return Start("full", "asked in run config (mode: full)")
    if daily_full:
        return Start("full", daily_full)
    candidates = warm_start_candidates(db, model_kind=MODEL_KIND, data_end_at_most=window_end,
                                       data_end_after=window_end - max_age, limit=MAX_CANDIDATES)
    if not candidates:
        return Start("full", f"no registered {MODEL_KIND} model trained on data that ends within "
                             f"{max_age.total_seconds() / 3600:g} h before this hour's end")
    passed_over = []
    for entry in candidates:
        previous, vocabulary, why_not = _try_candidate(entry, store, config, item_ids, min_overlap)
        if previous is not None:
            source = _source(entry)
            return Start("warm", f"continues {source['file_name']} (data until {source['data_end']}, "
                                 f"vocabulary overlap {vocabulary['overlap']:.3f} >= {min_overlap:g})",
                         model=previous.model, item_ids=previous.item_ids, source=source,
                         vocabulary=vocabulary, passed_over=passed_over)
        passed_over.append(f"{entry['file_name']}: {why_not}")
    return Start("full", f"no compatible model among the {len(candidates)} newest: "
                         + "; ".join(passed_over), passed_over=passed_over)
