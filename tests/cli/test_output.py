"""What the `batchrec` commands print besides their results (issue 18, operator friction): help for
every option, and no Dagster DEBUG events from `batchrec evaluate`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from pathlib import Path

from batchrec_dagster.cli.commands import build_parser

BATCHREC = str(Path(sys.executable).with_name("batchrec"))


def _options_without_help(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every option and argument without help, in this parser and in its sub-commands'."""
    missing = [prefix + (a.option_strings[0] if a.option_strings else a.dest) for a in parser._actions
               if a.help is None and not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _options_without_help(sub, f"{prefix}{name} ")
    return missing


def test_every_option_of_the_cli_commands_has_help():
    """Every command, including those other modules define (registry, serve, prod-stack)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert not _options_without_help(parser)
    assert "how many repositories to recommend" in commands["recommend"].format_help()


def test_evaluate_prints_info_not_debug(tmp_path: Path, mongo_server_uri: str):
    """An hour with no registered model: the evaluation run scores nothing and says so."""
    env = {**os.environ, "BATCHREC_HOME": str(tmp_path / "home"), "MONGODB_URI": mongo_server_uri,
           "MONGODB_DATABASE": f"t_{uuid.uuid4().hex[:12]}", "BATCHREC_DEPLOYMENT": "local"}
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run([BATCHREC, "evaluate"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluated window" in done.stdout
    assert " - model_evaluation_job - " in done.stderr  # the run's console log is there, from INFO up
    debug = [line for line in done.stderr.splitlines() if " - DEBUG - " in line]
    assert not debug, debug[:5]
