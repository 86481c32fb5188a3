"""Signal dispositions of the test process, put back after each test (tests/conftest.py).

Dagster's `capture_interrupts` (used when a run executes in-process) maps SIGTERM onto SIGINT's
handler and leaves it there on exit. When the suite is started with SIGINT ignored (`nohup make
test &` from a script: a non-interactive shell ignores SIGINT in background jobs), that leaves
SIGTERM ignored in the pytest process, and every process a later test starts inherits the ignored
SIGTERM: a service stopped "politely" then survives until SIGKILL.
"""

from __future__ import annotations

import signal
from typing import Any

GUARDED = (signal.SIGTERM, signal.SIGINT)


def current_dispositions() -> dict[int, Any]:
    return {sig: signal.getsignal(sig) for sig in GUARDED}


def restore_dispositions(saved: dict[int, Any]) -> list[str]:
    """Put back every disposition that changed; returns the names of those that had."""
    changed = []
    for sig, handler in saved.items():
        if signal.getsignal(sig) != handler and handler is not None:
            signal.signal(sig, handler)
            changed.append(signal.Signals(sig).name)
    return changed
