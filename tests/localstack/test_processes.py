"""Stopping a service and everything it started, by PID, even when it ignores SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import time

from batchrec_dagster.localstack.process_groups import stop_process_groups, wait_all_gone
from batchrec_dagster.localstack.processes import group_members, is_running
from tests.harness.dagster_services import wait_for

# a parent that ignores SIGTERM and a child that inherits the ignored signal (as a stuck service)
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
time.sleep(300)
"""


def test_a_group_that_ignores_sigterm_is_killed_and_checked_gone() -> None:
    process = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    child = int(process.stdout.readline())
    wait_for("both processes in the group", lambda: set(group_members(process.pid)) == {process.pid, child},
             timeout_s=30, interval_s=0.1)
    started = time.monotonic()
    stop_process_groups(process, timeout_s=1)
    assert time.monotonic() - started < 20
    assert process.returncode == -9  # SIGTERM was ignored, SIGKILL ended it
    assert not is_running(process.pid) and not is_running(child)
    assert group_members(process.pid) == set()
    process.stdout.close()


def test_a_polite_process_stops_on_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    stop_process_groups(process, timeout_s=30)
    assert process.returncode == -15
    assert wait_all_gone([process.pid], timeout_s=0) == []


def test_sigterm_left_ignored_by_dagster_is_put_back() -> None:
    """Reproduces the leak that made the test above fail in suites started as `nohup make test &`:
    with SIGINT ignored, Dagster's capture_interrupts leaves SIGTERM ignored, and a child started
    then ignores SIGTERM. restore_dispositions (run after every test by conftest) undoes it."""
    import signal

    from dagster._utils.interrupts import capture_interrupts

    from tests.harness.signals import current_dispositions, restore_dispositions

    saved = current_dispositions()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a non-interactive shell
    try:
        with capture_interrupts():
            pass
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # Dagster's mapping, left behind
    finally:
        assert "SIGTERM" in restore_dispositions(saved)
    assert signal.getsignal(signal.SIGTERM) == saved[signal.SIGTERM]
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    stop_process_groups(process, timeout_s=30)
    assert process.returncode == -15


def test_handling_installs_handlers_for_the_block_and_puts_the_previous_ones_back() -> None:
    import os
    import signal

    import pytest

    from batchrec_dagster.localstack.processes import handling

    received: list[int] = []
    before_usr1, before_usr2 = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGUSR2)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # an ignored signal must come back ignored
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with handling({signal.SIGUSR1: lambda sig, frame: received.append(sig),
                           signal.SIGUSR2: lambda sig, frame: received.append(sig)}):
                os.kill(os.getpid(), signal.SIGUSR1)
                os.kill(os.getpid(), signal.SIGUSR2)
                deadline = time.monotonic() + 10
                while len(received) < 2 and time.monotonic() < deadline:
                    pass  # Python runs the handlers between bytecodes, at a loop's jump at the latest
                raise RuntimeError("inside")
        assert received == [signal.SIGUSR1, signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR1) == before_usr1
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, before_usr2)
