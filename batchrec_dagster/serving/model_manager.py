"""Which model the server answers with, and how a better one replaces it without downtime.

The manager holds one reference to an immutable `LoadedModel`. A request reads that reference once
and keeps using the object it got, so a swap (one attribute assignment, atomic in CPython) never
changes the model under a request in flight; the old model is freed when its last request ends.

A refresh asks the registry for the fresh models in the order of its selection rule
(`registry.select_candidates`; its first is `select_best`, the function the pipeline uses). When
the best one is not the model serving, its artifact is read from the blob store, its size and
sha256 are checked against the registry entry, it is parsed by `recvae.load_artifact`
(safetensors + JSON, never pickle), warmed up on a few inputs and only then swapped in. If that
fails, the next candidate by the same rule is tried, down to (never below) the model already
serving; failures are kept for `GET /model` and the current model keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from bson import ObjectId
from pymongo.database import Database

from batchrec_dagster.registry import DEFAULT_MAX_AGE, select_candidates
from batchrec_dagster.serving.scoring import BatchScorer
from batchrec_dagster.storage import BlobStore, sha256_hex
from recvae import ArtifactError, Recommender, load_artifact

log = logging.getLogger("batchrec.serving")

REPOSITORIES = "repositories"


class ModelLoadError(RuntimeError):
    """The chosen model could not be downloaded, verified, loaded or warmed up."""


class ArtifactRejected(ModelLoadError):
    """The artifact itself is bad (size, checksum, format, warm-up): retrying cannot help."""


def json_safe(value: Any) -> Any:
    """Registry documents as JSON: ObjectId -> str, datetimes -> ISO 8601, numpy -> Python."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def entry_key(entry: Mapping[str, Any]) -> str:
    """Identity of a registry entry's artifact: the document id and the artifact checksum.

    `register_model` may update an entry in place (same run, same partition); a new checksum then
    counts as a different model.
    """
    return f"{entry.get('_id')}:{entry.get('sha256')}"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to answer: never mutated after construction, so it can be shared freely."""

    recommender: Recommender       # vocabulary (item_ids, index_of) and the model
    scorer: BatchScorer            # the model's top-k for request batches
    entry: dict[str, Any]          # the registry document, JSON-safe
    names: np.ndarray              # object array: repository full_name per column (None if unknown)
    names_source: str              # "artifact", "mongodb" or "none"
    loaded_at: datetime
    load_seconds: float
    key: str
    summary: dict[str, Any] = field(default_factory=dict)  # what each response says about the model
    # per column, the start of its JSON object in a response ('{"repo_id":1,"name":"a/b","score":'),
    # encoded once at load so a response costs a join, not a json.dumps per item
    json_prefix: np.ndarray | None = None
    summary_json: str = "null"
    # repository id -> column, for integer vocabularies (None otherwise: `recommender.index_of`)
    column_of: dict[int, int] | None = None

    @property
    def n_items(self) -> int:
        return self.recommender.n_items


@dataclass(frozen=True)
class SwapError:
    at: datetime
    entry_id: str | None
    file_name: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "entry_id": self.entry_id, "file_name": self.file_name,
                "message": self.message}


@dataclass(frozen=True)
class RefreshResult:
    outcome: str                   # "swapped", "unchanged", "no_model", "skipped_failed", "failed"
    entry_id: str | None = None
    message: str = ""


def recommend_batch(model: LoadedModel, columns: list[np.ndarray], k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k column indices and scores for several users at once (one forward pass)."""
    return model.scorer.recommend(columns, k)


def _item_names(db: Database | None, item_ids: np.ndarray, extra: Mapping[str, Any]
                ) -> tuple[np.ndarray, str]:
    names = np.full(len(item_ids), None, dtype=object)
    from_artifact = extra.get("item_names")
    if isinstance(from_artifact, list) and len(from_artifact) == len(item_ids):
        names[:] = [n if isinstance(n, str) else None for n in from_artifact]
        return names, "artifact"
    if db is None or item_ids.dtype.kind != "i":
        return names, "none"
    # older artifacts carry no names: look them up once per load, never per request
    column = {int(i): c for c, i in enumerate(item_ids.tolist())}
    found = 0
    ids = list(column)
    for start in range(0, len(ids), 5000):
        for doc in db[REPOSITORIES].find({"_id": {"$in": ids[start:start + 5000]}},
                                         {"_id": 1, "full_name": 1}):
            c = column.get(doc.get("_id"))
            if c is not None and isinstance(doc.get("full_name"), str):
                names[c] = doc["full_name"]
                found += 1
    return names, "mongodb" if found else "none"


def _warm_up(scorer: BatchScorer) -> None:
    """Run the shapes requests will use (first calls allocate) and reject non-finite models."""
    n = scorer.n_items
    rng = np.random.default_rng(0)
    inputs = [np.zeros(0, dtype=np.int64), np.array([0], dtype=np.int64)]
    inputs += [rng.choice(n, size=min(n, 10), replace=False) for _ in range(14)]
    for batch in (inputs[:1], inputs[1:2], inputs, inputs + inputs):
        _, scores = scorer.recommend(batch, min(20, n))
        if not (np.isfinite(scores) | np.isneginf(scores)).all():
            raise ArtifactRejected("model produces NaN or +inf scores on warm-up input")


class ModelManager:
    """Chooses, loads and swaps the served model; see the module docstring.

    `refresh_now()` runs one poll synchronously (tests and the first load use it); `start()` runs
    a daemon thread that polls every `poll_seconds` (the first poll immediately).
    """

    def __init__(self, db: Database, store: BlobStore, *, max_age: timedelta = DEFAULT_MAX_AGE,
                 poll_seconds: float | None = 60.0, model_kind: str = "recvae",
                 clock: Callable[[], datetime] | None = None, names_db: Database | None = None,
                 max_candidates: int = 5):
        self.db = db
        self.store = store
        self.max_age = max_age
        self.poll_seconds = poll_seconds
        self.model_kind = model_kind
        self._clock = clock or (lambda: datetime.now(UTC))
        self._names_db = names_db if names_db is not None else db
        self._current: LoadedModel | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_check_at: datetime | None = None
        self.last_error: SwapError | None = None
        self.last_outcome: RefreshResult | None = None
        self.swaps = 0
        # how far down the ranking one poll goes when better models fail to load
        self.max_candidates = max_candidates
        # candidates ranked above the served model that failed (this poll or, known bad, earlier)
        self.rejected: list[SwapError] = []
        # entries that failed for a reason retrying cannot fix (bad checksum, bad artifact):
        # not downloaded again on every poll, but still reported until a good model is swapped in
        self._rejected: dict[str, SwapError] = {}

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    # -- polling -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.poll_seconds is None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll_forever, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _poll_forever(self) -> None:
        while True:
            try:
                self.refresh_now()
            except Exception:  # never let the poller die: the next poll may succeed
                log.exception("model refresh failed unexpectedly")
            if self._stop.wait(self.poll_seconds):
                return

    # -- one refresh ---------------------------------------------------------------------------

    def refresh_now(self) -> RefreshResult:
        with self._refresh_lock:
            result = self._refresh()
            self.last_outcome = result
            return result

    def _refresh(self) -> RefreshResult:
        """Walk the fresh models in selection-rule order, down to the one serving, and serve the
        first that loads. A candidate that fails (download, checks, warm-up) is reported and the
        next one is tried, so a corrupt best model neither keeps a cold server unready nor blocks
        a good second-best that still ranks above the current model. Candidates ranked below the
        current model are never loaded: the current one is the best working model."""
        now = self._clock()
        self.last_check_at = now
        try:
            candidates = select_candidates(self.db, now=now, max_age=self.max_age,
                                           model_kind=self.model_kind, limit=self.max_candidates)
        except Exception as exc:  # registry unreachable: keep serving what we have
            self._fail(None, f"registry query failed: {type(exc).__name__}: {exc}")
            return RefreshResult("failed", None, str(exc))
        if not candidates:
            self.rejected = []
            return RefreshResult("no_model", None, "no fresh model in the registry")
        current = self._current
        failed: list[SwapError] = []    # ranked above what ends up serving, failed in this poll
        skipped: list[SwapError] = []   # ranked above it, known bad from an earlier poll
        listed = {entry_key(entry) for entry in candidates}
        # forget rejections of entries that are no longer candidates (bounded memory)
        self._rejected = {k: v for k, v in self._rejected.items() if k in listed}
        for entry in candidates:
            key = entry_key(entry)
            entry_id = str(entry.get("_id"))
            if current is not None and current.key == key:
                break  # everything below ranks lower than the model already serving
            if key in self._rejected:
                skipped.append(self._rejected[key])
                continue
            try:
                loaded = self._load(entry)
            except Exception as exc:  # whatever went wrong, try the next candidate
                message = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
                error = self._fail(entry, message)
                if isinstance(exc, ArtifactRejected):
                    self._rejected[key] = error
                failed.append(error)
                continue
            previous = current.entry.get("_id") if current else None
            self._current = loaded  # the swap: one reference assignment
            self.swaps += 1
            passed_over = failed + skipped
            self.rejected = passed_over
            self.last_error = passed_over[0] if passed_over else None
            log.info("serving model %s (%s, score %.4f) in place of %s; loaded in %.2fs%s",
                     entry_id, entry.get("file_name"), float(entry.get("score", float("nan"))),
                     previous, loaded.load_seconds,
                     f"; passed over {len(passed_over)} better-ranked model(s) that failed"
                     if passed_over else "")
            message = (f"fell back past {len(passed_over)} better-ranked model(s) that failed: "
                       + "; ".join(f"{e.entry_id}: {e.message}" for e in passed_over)) if passed_over else ""
            return RefreshResult("swapped", entry_id, message)
        self.rejected = failed + skipped
        if failed:
            return RefreshResult("failed", failed[0].entry_id, failed[0].message)
        if skipped:
            self.last_error = skipped[0]
            return RefreshResult("skipped_failed", skipped[0].entry_id, skipped[0].message)
        self.last_error = None
        return RefreshResult("unchanged", str(current.entry.get("_id")) if current else None)

    def _fail(self, entry: Mapping[str, Any] | None, message: str) -> SwapError:
        error = SwapError(self._clock(), str(entry.get("_id")) if entry else None,
                          entry.get("file_name") if entry else None, message)
        self.last_error = error
        log.error("model %s failed to load: %s (serving %s)", error.entry_id, message,
                  self._current.entry.get("_id") if self._current else "no model")
        return error

    def _load(self, entry: Mapping[str, Any]) -> LoadedModel:
        started = time.perf_counter()
        file_name = entry.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise ArtifactRejected("registry entry has no file_name")
        try:
            data = self.store.read(file_name)
        except Exception as exc:  # not found, network, permissions: may be fixed by a retry
            where = getattr(self.store, "location", None)
            hint = (f" (the registry says it is in {entry.get('bucket')!r}, this server reads {where!r})"
                    if entry.get("bucket") and where and entry.get("bucket") != where else "")
            raise ModelLoadError(f"download of {file_name} failed: {type(exc).__name__}: {exc}{hint}"
                                 ) from exc
        expected_size, expected_sha = entry.get("size_bytes"), entry.get("sha256")
        if len(data) != expected_size:
            raise ArtifactRejected(f"{file_name}: size {len(data)} bytes, registry says {expected_size}")
        actual_sha = sha256_hex(data)
        if actual_sha != expected_sha:
            raise ArtifactRejected(f"{file_name}: sha256 {actual_sha} does not match the registry's "
                             f"{expected_sha}")
        try:
            artifact = load_artifact(data, device="cpu")
        except ArtifactError as exc:
            raise ArtifactRejected(f"{file_name}: not a loadable artifact: {exc}") from exc
        recommender = artifact.recommender
        try:
            scorer = BatchScorer(recommender)
            _warm_up(scorer)
        except Exception as exc:
            raise ArtifactRejected(f"{file_name}: warm-up failed: {type(exc).__name__}: {exc}") from exc
        try:
            names, names_source = _item_names(self._names_db, recommender.item_ids, artifact.extra)
        except Exception as exc:  # names are cosmetic: serve ids without them rather than fail
            log.warning("repository names unavailable for %s: %s", file_name, exc)
            names, names_source = np.full(recommender.n_items, None, dtype=object), "none"
        safe_entry = json_safe(entry)
        summary = {k: safe_entry.get(k) for k in ("run_id", "partition_key", "score", "file_name")}
        summary = {"id": safe_entry.get("_id"), **summary}
        prefixes = np.empty(recommender.n_items, dtype=object)
        prefixes[:] = [f'{{"repo_id":{json.dumps(i)},"name":{json.dumps(n)},"score":'
                       for i, n in zip(recommender.item_ids.tolist(), names.tolist(), strict=True)]
        item_ids = recommender.item_ids
        column_of = ({i: c for c, i in enumerate(item_ids.tolist())} if item_ids.dtype.kind in "iu"
                     else None)
        return LoadedModel(recommender=recommender, scorer=scorer, json_prefix=prefixes,
                           column_of=column_of,
                           summary_json=json.dumps(summary, separators=(",", ":")),
                           entry=safe_entry, names=names,
                           names_source=names_source, loaded_at=datetime.now(UTC),
                           load_seconds=time.perf_counter() - started, key=entry_key(entry),
                           summary=summary)

    # -- reporting -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        current = self._current
        error = self.last_error
        return {
            "ready": current is not None,
            "model": None if current is None else {
                **current.summary,
                "n_items": current.n_items,
                "scorer": current.scorer.mode,
                "loaded_at": current.loaded_at.isoformat(),
                "load_seconds": round(current.load_seconds, 3),
                "names_source": current.names_source,
                "entry": current.entry,
            },
            "last_check_at": self.last_check_at.isoformat() if self.last_check_at else None,
            "last_outcome": None if self.last_outcome is None else {
                "outcome": self.last_outcome.outcome, "entry_id": self.last_outcome.entry_id,
                "message": self.last_outcome.message},
            "last_swap_error": error.to_json() if error else None,
            "rejected_candidates": [e.to_json() for e in self.rejected],
            "swaps": self.swaps,
            "poll_seconds": self.poll_seconds,
            "max_age_hours": self.max_age.total_seconds() / 3600,
            "store": getattr(self.store, "location", None),
        }
