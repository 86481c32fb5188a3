"""Running the hourly job in this process (`batchrec materialize`, `batchrec demo`, the tests).

The job comes from definitions.build_definitions, the same assembly the code location serves.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import dagster as dg

from batchrec_dagster.cli.errors import MaterializeError
from batchrec_dagster.defs.instance.process_identity import current_process_tags
from batchrec_dagster.defs.jobs import EVALUATION_JOB_NAME
from batchrec_dagster.defs.partitions import checked_partition_key, hourly_partitions, partition_window
from batchrec_dagster.registry.models import entries_for_partition
from batchrec_dagster.settings import PROJECT_ROOT, Settings, override_for_process

JOB_NAME = "hourly_training_job"


def _sets_a_pool_limit(instance_file: Path) -> bool:
    """Whether an instance file limits pools (`concurrency.pools.default_limit`); True when it
    cannot be read as YAML, which Dagster itself reports."""
    import yaml

    try:
        config = yaml.safe_load(instance_file.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True
    pools = (config.get("concurrency") or {}).get("pools") if isinstance(config, dict) else None
    return isinstance(pools, dict) and pools.get("default_limit") is not None


def _install(source: Path, target: Path) -> None:
    """Copy whole or not at all: a Dagster process starting meanwhile never reads half a file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def prepare_dagster_home(settings: Settings) -> Path:
    """The Dagster instance folder with batchrec's instance settings (the repository's dagster.yaml:
    run queue, training pool), exported for Dagster's own code as DAGSTER_HOME.

    BATCHREC_HOME/dagster_home (DAGSTER_HOME not set, or exported as that folder, as the README
    does) always holds the repository's file. Another exported DAGSTER_HOME without a dagster.yaml
    gets a copy, said in one line: without it Dagster has no run queue and no pool limit, and
    training runs run side by side. A dagster.yaml already there is the operator's and stays; one
    line warns when it sets no pool limit."""
    home = settings.dagster_home_dir
    home.mkdir(parents=True, exist_ok=True)
    source, target = PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml"
    ours = home.resolve() == (settings.home / "dagster_home").resolve()
    if source.is_file() and ours:
        if not target.exists() or target.read_bytes() != source.read_bytes():
            _install(source, target)
    elif source.is_file() and not target.exists():
        _install(source, target)
        print(f"DAGSTER_HOME {home} had no dagster.yaml: copied batchrec's there (run queue, one "
              f"training run at a time)", flush=True)
    elif target.is_file() and not _sets_a_pool_limit(target):
        print(f"warning: {target} sets no pool limit (concurrency.pools.default_limit), so training runs "
              f"may run side by side; see {source}", flush=True)
    override_for_process(DAGSTER_HOME=str(home))
    return home


def latest_partition_key(settings: Settings) -> str:
    key = hourly_partitions(settings).get_last_partition_key()
    if key is None:
        raise MaterializeError("no complete hourly partition yet (check BATCHREC_PARTITIONS_START)")
    return key


def partition_to_run(key: str | None, settings: Settings) -> str:
    """`--partition KEY` checked (a closed hour of the partitions), or the latest closed hour."""
    if key is None:
        return latest_partition_key(settings)
    try:
        return checked_partition_key(hourly_partitions(settings), key)
    except ValueError as exc:
        raise MaterializeError(str(exc)) from None


def training_run_config(training: dict[str, Any] | None = None,
                        extra: dict[str, Any] | None = None, log_level: str = "INFO") -> dict[str, Any]:
    """Run config for hourly_training_job: per-asset config plus the console log level."""
    ops: dict[str, Any] = {}
    if training:
        ops["recvae_model"] = {"config": dict(training)}
    for op, config in (extra or {}).items():
        ops.setdefault(op, {"config": {}})["config"].update(config)
    config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if ops:
        config["ops"] = ops
    return config


def materialize_partition(partition_key: str, *, settings: Settings, run_config: dict[str, Any] | None = None,
                          instance: dg.DagsterInstance | None = None,
                          raise_on_error: bool = True, job_name: str = JOB_NAME) -> dg.ExecuteInProcessResult:
    """Run hourly_training_job (the five assets and their checks) for one hour in this process, or
    another job of the code location (`model_evaluation_job`)."""
    from batchrec_dagster.defs.definitions import build_definitions

    job = build_definitions(settings).resolve_job_def(job_name)
    # the run lives and dies with this process: name the process on the run, so that run_reaper
    # can fail the run (and free the training pool) if this process is killed
    return job.execute_in_process(partition_key=partition_key, run_config=run_config or {},
                                  instance=instance, raise_on_error=raise_on_error,
                                  tags=current_process_tags())


def _config_classes() -> dict[str, type[dg.Config]]:
    from batchrec_dagster.defs.assets.config import (
        MatrixFilterConfig,
        SourceConfig,
        SplitConfig,
        TrainingConfig,
    )
    from batchrec_dagster.defs.assets.model_evaluation import EvaluationConfig

    return {"raw_repositories": SourceConfig, "user_item_matrix": MatrixFilterConfig,
            "vae_input": SplitConfig, "recvae_model": TrainingConfig, "model_evaluation": EvaluationConfig}


def check_run_config(run_config: dict[str, Any], settings: Settings) -> None:
    """MaterializeError (one line) for run config the hourly job would reject: unknown names or
    wrong types (Dagster's schema), or values out of range (the assets' own Config classes, which
    Dagster checks only when the step starts, i.e. after the evaluation run)."""
    from pydantic import ValidationError

    from batchrec_dagster.defs.definitions import build_definitions

    job = build_definitions(settings).resolve_job_def(JOB_NAME)
    try:
        dg.validate_run_config(job, run_config)
    except dg.DagsterInvalidConfigError as exc:
        problems = [error.message.split(" Expected:", 1)[0] for error in exc.errors]
        raise MaterializeError("invalid run config: " + "; ".join(problems)) from None
    for op, config_class in _config_classes().items():
        try:
            config_class(**run_config.get("ops", {}).get(op, {}).get("config", {}))
        except ValidationError as exc:
            problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise MaterializeError(f"invalid run config of {op}: " + "; ".join(problems)) from None


def asset_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey(asset):
            return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    return {}


def _evaluation_config(run_config: dict[str, Any]) -> dict[str, Any]:
    """The training run config's logger and model_evaluation config (if any), nothing else."""
    config: dict[str, Any] = {k: v for k, v in run_config.items() if k == "loggers"}
    ops = run_config.get("ops", {})
    if "model_evaluation" in ops:
        config["ops"] = {"model_evaluation": ops["model_evaluation"]}
    return config


def _failure_reason(event: dg.DagsterEvent) -> str:
    """The first line of a step failure's error, without the exception's class (a dg.Failure's
    description says what to do, e.g. `batchrec load-demo` when no star was read)."""
    error = event.step_failure_data.error if event.step_failure_data else None
    if error is None or not error.message:
        return ""
    first = error.message.strip().splitlines()[0]
    prefix, _, rest = first.partition(": ")
    return rest if rest and prefix.endswith(error.cls_name or "?") else first


def _raise_if_failed(result: dg.ExecuteInProcessResult, what: str) -> None:
    if not result.success:
        failures = [e for e in result.all_events if e.is_step_failure]
        where = ", ".join(e.step_key or "?" for e in failures) or "a step"
        reason = _failure_reason(failures[0]).rstrip(".") if failures else ""
        raise MaterializeError(f"{what} {result.run_id} failed at {where}" + (f": {reason}" if reason else "")
                               + "; the log above or `batchrec dev` (Dagit) has the details")


def evaluate_window(partition_key: str, run_config: dict[str, Any], instance: dg.DagsterInstance,
                    settings: Settings) -> dict[str, Any]:
    """Run model_evaluation_job for the hour and print what it scored and decided; its metadata."""
    result = materialize_partition(partition_key, run_config=_evaluation_config(run_config),
                                   settings=settings, instance=instance, raise_on_error=False,
                                   job_name=EVALUATION_JOB_NAME)
    _raise_if_failed(result, f"evaluation run of {partition_key}")
    meta = asset_metadata(result, "model_evaluation")
    scored = meta.get("candidates", 0) - meta.get("not_scored", 0)
    detail = meta.get("skipped", "nothing to score")
    if "best_score" in meta:
        detail = (f"{scored} model(s) scored on {meta.get('users')} users' {meta.get('targets')} new stars; "
                  f"best {meta['best_score']:.4f}")
    print(f"evaluated window {partition_key}: {detail}; champion {meta.get('champion')} "
          f"({'promoted' if meta.get('promoted') else 'kept'}: {meta.get('champion_reason')})", flush=True)
    return meta


def run_and_register(db: Any, partition_key: str, run_config: dict[str, Any],
                     settings: Settings) -> dict[str, Any]:
    """Materialize the hour on the persistent instance; the registry entry this run wrote."""
    prepare_dagster_home(settings)
    started = time.perf_counter()
    print(f"materializing partition {partition_key} ({settings.deployment} deployment) ...", flush=True)
    with dg.DagsterInstance.get() as instance:
        # first the hour's comparable evaluation of the models before it (what the evaluation
        # schedule does at minute 1), then the training (the training schedule's minute 5)
        evaluate_window(partition_key, run_config, instance, settings)
        result = materialize_partition(partition_key, run_config=run_config, settings=settings,
                                       instance=instance, raise_on_error=False)
    _raise_if_failed(result, "run")
    model = asset_metadata(result, "recvae_model")
    matrix = asset_metadata(result, "user_item_matrix")
    print(f"run {result.run_id} succeeded in {time.perf_counter() - started:.0f}s: "
          f"{matrix.get('users')} users x {matrix.get('items')} repositories; "
          f"RecVAE NDCG@100 {model.get('score', float('nan')):.4f} vs popularity "
          f"{model.get('popularity_score', float('nan')):.4f} after {model.get('epochs')} epochs")
    raw = asset_metadata(result, "raw_repositories")
    print(f"  {raw.get('read_mode')} read ({raw.get('read_reason')}); {model.get('training_mode')} "
          f"training ({model.get('training_mode_reason')})")
    entries = [e for e in entries_for_partition(db, partition_window(partition_key)[1])
               if e["run_id"] == result.run_id]
    if not entries:
        raise MaterializeError(f"run {result.run_id} registered no model")
    return entries[-1]
