"""The CLI's user-facing failures, printed as one line without a traceback. They live apart from
the commands that raise them so that `batchrec` catches them without importing Dagster or PyTorch:
`batchrec settings` or `batchrec registry` start in a second, not in several."""

from __future__ import annotations


class MaterializeError(RuntimeError):
    """The run failed or registered nothing (printed without a traceback by the CLI)."""


class RecommendError(RuntimeError):
    """No usable model, or an unknown user or repository (printed without a traceback)."""
