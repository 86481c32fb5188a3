"""Which model the server answers with, and how a better one replaces it without downtime.

The manager holds one reference to an immutable `LoadedModel`. A request reads that reference once
and keeps using the object it got, so a swap (one attribute assignment, atomic in CPython) never
changes the model under a request in flight; the old model is freed when its last request ends.

A poll asks for ALL the fresh models in serving order (`registry.champions.serving_order`: the operators'
pin, else the champion decided on comparable scores, then the other fresh, unbanned models by
comparable score; `rank` replaces it in tests) and walks them from the first down to (never
below) the model already serving; the first one that
loads (`loaded.load_model`: download, size and sha256, parse, warm-up) is swapped in. A
candidate that fails is remembered: a bad artifact (`ArtifactRejected`) is not tried again while
it stays a candidate, a failed download is retried with exponential backoff. So a cold server
behind any number of bad entries becomes ready at its first poll, and later polls skip the known
failures instead of downloading them again. Failures are kept for `GET /model`; the current
model keeps serving.

With `load_challenger`, the walk goes on below the served model to the next model that loads
(the best challenger by the same order), kept loaded for the page's side-by-side comparison.

A model an operator bans stops serving at the next poll even when nothing replaces it: the server
then answers as a freshly started one would (unready, with the reason), never with a banned model.
`selection` describes the model actually served (the order's first, or the fallback and why).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from batchrec_dagster.registry.champions import serving_order
from batchrec_dagster.registry.controls import current_controls
from batchrec_dagster.registry.defaults import SelectionPolicy
from batchrec_dagster.serving.model.ann_index import AnnOptions
from batchrec_dagster.serving.model.loaded import (
    ArtifactRejected,
    LoadedModel,
    ModelLoadError,
    entry_key,
    load_model,
)
from batchrec_dagster.serving.model.local_copies import LocalCopies
from batchrec_dagster.storage.blobs import BlobStore

log = logging.getLogger("batchrec.serving")

MAX_BACKOFF = timedelta(minutes=30)  # the longest wait before a failed download is tried again
MAX_CANDIDATES = 10_000  # all of them, in practice: hourly models within the maximum age

Rank = Callable[[Database, datetime, SelectionPolicy], list[dict[str, Any]]]
Banned = Callable[[Database], Mapping[str, str]]


def banned_models(db: Database) -> dict[str, str]:
    """The models operators banned (lower-case id -> the ban's reason), from `model_controls`."""
    return {model_id.lower(): action.reason for model_id, action in current_controls(db).bans.items()}


def serving_candidates(db: Database, now: datetime, policy: SelectionPolicy) -> list[dict[str, Any]]:
    """The fresh models in serving order; the first carries `selection` (pin, champion or
    fallback, and why)."""
    return serving_order(db, policy, now=now, limit=MAX_CANDIDATES)


@dataclass(frozen=True)
class SwapError:
    at: datetime
    entry_id: str | None
    file_name: str | None
    message: str
    retry_at: datetime | None = None  # None: not retried while it stays a candidate (bad artifact)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "entry_id": self.entry_id, "file_name": self.file_name,
                "message": self.message,
                "retry_at": self.retry_at.isoformat() if self.retry_at else None}


@dataclass(frozen=True)
class _Failure:
    error: SwapError
    attempts: int
    permanent: bool


@dataclass(frozen=True)
class RefreshResult:
    outcome: str                   # "swapped", "unchanged", "no_model", "skipped_failed", "failed"
    entry_id: str | None = None
    message: str = ""


class ModelManager:
    """Chooses, loads and swaps the served model; see the module docstring.

    `refresh_now()` runs one poll synchronously (tests and the first load use it); `start()` runs
    a daemon thread that polls every `poll_seconds`, at multiples of `poll_seconds` of the wall
    clock, so that several workers and servers look at the registry at the same moments and
    converge on a new model together. `on_refresh(manager, result)` is called after every poll
    (metrics).
    """

    def __init__(self, db: Database, store: BlobStore, *, policy: SelectionPolicy | None = None,
                 poll_seconds: float | None = 60.0, rank: Rank = serving_candidates,
                 clock: Callable[[], datetime] | None = None, names_db: Database | None = None,
                 load_challenger: bool = False, backoff: timedelta | None = None,
                 on_refresh: Callable[[ModelManager, RefreshResult], None] | None = None,
                 banned: Banned = banned_models,
                 ann: AnnOptions | None = None, copies: LocalCopies | None = None):
        self.db = db
        self.copies = copies  # where workers share verified local files (local_copies.py); None: in memory
        self.ann = ann  # approximate top-k for large catalogs (ann_index.py); None: always exact
        self.store = store
        self.policy = policy or SelectionPolicy()  # the settings' (runtime.build_app) in a server
        self.poll_seconds = poll_seconds
        self.rank = rank
        self.banned = banned
        self.load_challenger = load_challenger
        # first wait before a failed download is retried; doubles per failure, up to MAX_BACKOFF
        self.backoff = backoff or timedelta(seconds=poll_seconds or 60.0)
        self.on_refresh = on_refresh
        self._clock = clock or (lambda: datetime.now(UTC))
        self._names_db = names_db if names_db is not None else db
        self._current: LoadedModel | None = None
        self._challenger: LoadedModel | None = None
        self._refresh_lock = threading.Lock()
        # the served model and `selection` change together under this lock (held only for the two
        # assignments), so that /model never pairs a model with the reason another one served;
        # requests read `current` alone, without it
        self._publish_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_check_at: datetime | None = None
        self.last_error: SwapError | None = None
        self.last_outcome: RefreshResult | None = None
        self.registry_reachable: bool | None = None
        self.selection: dict[str, Any] | None = None  # why the served model serves
        self.withdrawn: str | None = None  # why the last model stopped serving with none after it
        self.swaps = 0
        self.failed_loads = 0
        self.poll_errors = 0
        # candidates ranked above the served model that failed, best-ranked first
        self.rejected: list[SwapError] = []
        self.challenger_error: SwapError | None = None
        # entry key -> its last failure; forgotten once the entry is no longer a candidate
        self._failures: dict[str, _Failure] = {}

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def published(self) -> tuple[LoadedModel | None, dict[str, Any] | None]:
        """The served model and why it serves, as one consistent pair (for /model)."""
        with self._publish_lock:
            return self._current, self.selection

    @property
    def challenger(self) -> LoadedModel | None:
        return self._challenger

    def now(self) -> datetime:
        return self._clock()

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
        assert self.poll_seconds is not None
        while True:
            try:
                self.refresh_now()
            except Exception:  # never let the poller die: the next poll may succeed
                log.exception("model refresh failed unexpectedly")
            if self._stop.wait(self.poll_seconds - time.time() % self.poll_seconds):
                return

    # -- one refresh ---------------------------------------------------------------------------

    def refresh_now(self) -> RefreshResult:
        with self._refresh_lock:
            result = self._refresh()
            self.last_outcome = result
        if self.on_refresh is not None:
            try:
                self.on_refresh(self, result)
            except Exception:  # reporting must not break polling
                log.exception("on_refresh callback failed")
        return result

    def _refresh(self) -> RefreshResult:
        now = self._clock()
        self.last_check_at = now
        try:
            candidates = self.rank(self.db, now, self.policy)
            banned = self.banned(self.db)
        except Exception as exc:  # registry unreachable: keep serving what we have
            self.registry_reachable = False
            self.poll_errors += 1
            message = f"registry query failed: {type(exc).__name__}: {exc}"
            self.last_error = SwapError(now, None, None, message)
            log.error("%s (serving %s)", message, self._served_id())
            return RefreshResult("failed", None, message)
        self.registry_reachable = True
        self._withdraw_banned(banned, now)
        # the order's first and why; `selection` describes this poll's order, not the model: kept
        # out of the loaded entry (self.selection is set for the model that ends up serving)
        decision = candidates[0].get("selection") if candidates else None
        candidates = [{k: v for k, v in c.items() if k != "selection"} for c in candidates
                      if str(c.get("_id")).lower() not in banned]  # whatever order `rank` gives
        if not candidates:
            self.rejected, self.last_error, self._failures = [], None, {}
            self._challenger = None
            self._publish(self._current, self._served_selection(decision, candidates, self._current))
            return RefreshResult("no_model", None, "the registry holds no fresh model" + (
                " that is not banned" if banned else ""))
        listed = {entry_key(entry) for entry in candidates}
        self._failures = {k: v for k, v in self._failures.items() if k in listed}  # bounded memory
        loaded_before = [m for m in (self._current, self._challenger) if m is not None]
        result, rest = self._walk(candidates, now, decision)
        self._publish(self._current, self._served_selection(decision, candidates, self._current))
        if self.load_challenger:
            self._choose_challenger(rest, now, loaded_before)
        return result

    def _withdraw_banned(self, banned: Mapping[str, str], now: datetime) -> None:
        """Stop serving (and comparing with) a banned model at once, even with nothing to replace
        it: a banned model must not answer, and a restarted server would not load it."""
        current = self._current
        if self._challenger is not None and str(self._challenger.summary["id"]).lower() in banned:
            self._challenger = None
        if current is None or str(current.summary["id"]).lower() not in banned:
            return
        reason = banned[str(current.summary["id"]).lower()]
        self.withdrawn = (f"model {current.summary['id']} was banned by an operator"
                          f"{f' ({reason})' if reason else ''} and stopped serving at {now.isoformat()}")
        self._publish(None, None)
        log.warning("%s", self.withdrawn)

    def _publish(self, current: LoadedModel | None, selection: dict[str, Any] | None) -> None:
        with self._publish_lock:
            self._current = current  # the swap: one reference assignment, for the requests
            self.selection = selection

    def _served_selection(self, decision: dict[str, Any] | None, candidates: list[dict[str, Any]],
                          current: LoadedModel | None) -> dict[str, Any] | None:
        """Why `current` serves: the order's decision when it is the order's first, else a
        fallback past the failed better-ranked ones, else kept (no longer in the order)."""
        if current is None:
            return None
        served_id = current.summary["id"]
        context = {k: v for k, v in (decision or {}).items() if k not in ("role", "reason")}
        first = candidates[0] if candidates else None
        if first is not None and entry_key(first) == current.key:
            return None if decision is None else {**decision, "model_id": served_id}
        ranked_first = None if first is None else {
            "model_id": str(first.get("_id")), "role": (decision or {}).get("role"),
            "reason": (decision or {}).get("reason")}
        if any(entry_key(c) == current.key for c in candidates):
            failed = "; ".join(f"{e.entry_id}: {e.message}" for e in self.rejected)
            return {**context, "role": "fallback", "model_id": served_id, "ranked_first": ranked_first,
                    "reason": "the better-ranked models failed to load" + (f" ({failed})" if failed else "")}
        return {**context, "role": "kept", "model_id": served_id, "ranked_first": ranked_first,
                "reason": "no longer in the serving order (older than the maximum age, or dropped "
                          "from the ranking); kept because no model in the order loads"}

    def _walk(self, candidates: list[dict[str, Any]], now: datetime, decision: dict[str, Any] | None
              ) -> tuple[RefreshResult, list[dict[str, Any]]]:
        """Serve the first candidate that loads, from the best down to the one serving. Returns the
        outcome and the candidates ranked below the served model (the challengers)."""
        current = self._current
        passed_over: list[SwapError] = []  # ranked above what ends up serving, best first
        tried = False
        for index, entry in enumerate(candidates):
            key = entry_key(entry)
            if current is not None and current.key == key:
                return self._settled(passed_over, tried, current), candidates[index + 1:]
            known = self._known_failure(key, now)
            if known is not None:
                passed_over.append(known)
                continue
            tried = True
            loaded = self._try_load(entry, now)
            if isinstance(loaded, SwapError):
                passed_over.append(loaded)
                continue
            self._swap(loaded, passed_over, decision, candidates)
            message = ("fell back past " + "; ".join(f"{e.entry_id}: {e.message}" for e in passed_over)
                       if passed_over else "")
            return RefreshResult("swapped", loaded.summary["id"], message), candidates[index + 1:]
        # nothing ranked at or above the current model loads (or the current one went stale)
        rest = [c for c in candidates if current is None or entry_key(c) != current.key]
        return self._settled(passed_over, tried, current), rest

    def _settled(self, passed_over: list[SwapError], tried: bool, current: LoadedModel | None
                 ) -> RefreshResult:
        """No swap: report the best-ranked failure (the same one in the outcome and in
        `last_swap_error`), or that the serving model is still the best."""
        self.rejected = passed_over
        self.last_error = passed_over[0] if passed_over else None
        if passed_over:
            first = passed_over[0]
            return RefreshResult("failed" if tried else "skipped_failed", first.entry_id, first.message)
        return RefreshResult("unchanged", self._served_id())

    def _swap(self, loaded: LoadedModel, passed_over: list[SwapError], decision: dict[str, Any] | None,
              candidates: list[dict[str, Any]]) -> None:
        previous = self._current
        self.rejected = passed_over  # before the selection, which names them when it falls back
        self.last_error = passed_over[0] if passed_over else None
        self._publish(loaded, self._served_selection(decision, candidates, loaded))
        self.withdrawn = None
        self.swaps += 1
        log.info("serving model %s (%s, score %s) in place of %s; loaded in %.2fs%s",
                 loaded.summary["id"], loaded.summary["file_name"], loaded.summary["score"],
                 previous.summary["id"] if previous else None, loaded.load_seconds,
                 f"; passed over {len(passed_over)} better-ranked model(s) that failed"
                 if passed_over else "")

    def _choose_challenger(self, below: list[dict[str, Any]], now: datetime,
                           loaded_before: list[LoadedModel]) -> None:
        """The best model ranked below the served one that loads. A model loaded before this poll
        is reused (after a swap, the previous champion is usually the new challenger)."""
        self.challenger_error = None
        reusable = {m.key: m for m in loaded_before}
        served = self._current.key if self._current is not None else None
        for entry in below:
            key = entry_key(entry)
            if key == served:
                continue
            if key in reusable:
                self._challenger = reusable[key]
                return
            known = self._known_failure(key, now)
            if known is not None:
                self.challenger_error = self.challenger_error or known
                continue
            loaded = self._try_load(entry, now)
            if isinstance(loaded, SwapError):
                self.challenger_error = self.challenger_error or loaded
                continue
            self._challenger = loaded
            return
        self._challenger = None

    def _known_failure(self, key: str, now: datetime) -> SwapError | None:
        """The remembered failure of this candidate if it must not be tried at this poll."""
        failure = self._failures.get(key)
        if failure is None:
            return None
        if failure.permanent or (failure.error.retry_at is not None and now < failure.error.retry_at):
            return failure.error
        return None

    def _try_load(self, entry: Mapping[str, Any], now: datetime) -> LoadedModel | SwapError:
        key = entry_key(entry)
        try:
            return load_model(entry, self.store, self._names_db, ann=self.ann, copies=self.copies)
        except Exception as exc:  # whatever went wrong, remember it and try the next candidate
            message = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            permanent = isinstance(exc, ArtifactRejected)
            attempts = self._failures[key].attempts + 1 if key in self._failures else 1
            retry_at = None if permanent else now + min(MAX_BACKOFF, self.backoff * 2 ** (attempts - 1))
            error = SwapError(self._clock(), str(entry.get("_id")), entry.get("file_name"), message,
                              retry_at)
            self._failures[key] = _Failure(error, attempts, permanent)
            self.failed_loads += 1
            log.error("model %s failed to load: %s (serving %s)%s", error.entry_id, message,
                      self._served_id(), f"; next try after {retry_at.isoformat()}" if retry_at else "")
            return error

    def _served_id(self) -> str | None:
        return self._current.summary["id"] if self._current is not None else None
