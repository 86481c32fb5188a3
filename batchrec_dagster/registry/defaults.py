"""The registry's rules in numbers and names, each defined here once, and the SelectionPolicy
that carries the two of them a deployment may change.

settings.py takes its defaults from here (BATCHREC_MODEL_MAX_AGE_HOURS,
BATCHREC_SCORE_TIE_TOLERANCE) and builds the policy from them (Settings.selection_policy). The
registry's functions are passed a policy and never read the settings; `SelectionPolicy()` holds
these defaults for a library call or a test. Help texts format these values instead of repeating
them. Imports nothing of batchrec, so that settings.py can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

# models trained on data older than this are never champion, pinned or served
MAX_MODEL_AGE_HOURS = 24.0
MAX_MODEL_AGE = timedelta(hours=MAX_MODEL_AGE_HOURS)

# comparable scores this close are a tie (they print alike at 4 decimals); the newest model wins
TIE_TOLERANCE = 1e-4

# the metric every score in the registry is (a model's own score and its comparable scores)
SCORE_METRIC = "ndcg@100"

# the kind of model batchrec trains, registers and serves
MODEL_KIND = "recvae"


@dataclass(frozen=True)
class SelectionPolicy:
    """How the champion and the served model are chosen: models whose data ends more than `max_age`
    before now never serve, and comparable scores within `tie_tolerance` of the best are a tie."""

    max_age: timedelta = MAX_MODEL_AGE
    tie_tolerance: float = TIE_TOLERANCE

    def __post_init__(self) -> None:
        if self.max_age <= timedelta(0):
            raise ValueError(f"max_age must be positive, not {self.max_age}")
        if self.tie_tolerance < 0:
            raise ValueError(f"tie_tolerance must be >= 0, not {self.tie_tolerance}")

    @classmethod
    def of(cls, max_age_hours: float, tie_tolerance: float = TIE_TOLERANCE) -> SelectionPolicy:
        """The policy for settings in hours (BATCHREC_MODEL_MAX_AGE_HOURS, --max-age-hours)."""
        return cls(timedelta(hours=max_age_hours), tie_tolerance)

    @property
    def max_age_hours(self) -> float:
        return self.max_age.total_seconds() / 3600
