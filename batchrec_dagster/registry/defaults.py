"""The registry's rules in numbers and names, each defined here once.

settings.py takes its defaults from here (BATCHREC_MODEL_MAX_AGE_HOURS,
BATCHREC_SCORE_TIE_TOLERANCE); code that is passed a setting uses that, and falls back to these
only where no settings object exists (a library call, a test). Help texts format these values
instead of repeating them. Imports nothing, so that settings.py can import it.
"""

from __future__ import annotations

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
