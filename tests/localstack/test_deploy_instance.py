"""The production Dagster instance files: what Dagster itself makes of them.

deploy/dagster.yaml is loaded by DagsterInstance against a real local PostgreSQL; the run
launcher and compute-log blocks of deploy/dagster-k8s.yaml are processed with dagster-k8s's and
dagster-gcp's own config schemas (the path `ConfigurableClassData.rehydrate` takes, short of
connecting to a cluster); the Helm values are checked to carry the same settings.
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster._core.instance.ref import InstanceRef
from dagster._serdes.config_class import ConfigurableClassData
from dagster_gcp.gcs.compute_log_manager import GCSComputeLogManager
from dagster_k8s import K8sRunLauncher
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from batchrec_dagster.defs.instance.run_queue import PoolLimitQueuedRunCoordinator
from batchrec_dagster.localstack.postgres import LocalPostgres
from tests.harness.deploy_files import (
    HELM_VALUES,
    K8S_INSTANCE,
    K8S_ONLY_BLOCKS,
    PG_ENV,
    PROD_INSTANCE,
    dagster_home_with,
    load_yaml,
    manifests,
)
from tests.harness.servers import free_port


def test_prod_instance_runs_on_postgres(pg_root: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = LocalPostgres(pg_root / "pg")
    connection = cluster.start(free_port())
    try:
        for name, value in connection.dagster_env().items():
            monkeypatch.setenv(name, value)
        home = dagster_home_with(tmp_path, PROD_INSTANCE)
        instance = DagsterInstance.from_config(str(home))
        try:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
            assert instance.run_storage._engine.dialect.driver == "psycopg2"  # noqa: SLF001
            assert instance.get_runs() == []
            coordinator = instance.run_coordinator
            # the project's run queue (defs/instance/run_queue.py): pool limits and training tags
            # at submission
            assert isinstance(coordinator, PoolLimitQueuedRunCoordinator)
            assert coordinator.get_run_queue_config().max_user_code_failure_retries == 5
            pools = instance.get_concurrency_config().pool_config
            assert (pools.default_pool_limit, pools.pool_granularity.value) == (1, "run")
            assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 7200
            assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
            assert not instance.run_retries_retry_on_asset_or_op_failure
            # the training pool gets its slot from the default limit on first use
            instance.event_log_storage.initialize_concurrency_limit_to_default("training")
            assert instance.event_log_storage.get_concurrency_info("training").slot_count == 1
        finally:
            instance.dispose()
        # Dagster created its schema in that database, not in files under DAGSTER_HOME
        with psycopg2.connect(connection.url()) as conn, conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
            tables = {row[0] for row in cur.fetchall()}
        conn.close()
        assert {"runs", "event_logs", "jobs", "job_ticks", "concurrency_limits"} <= tables
        assert not list(home.glob("**/*.db"))
    finally:
        cluster.stop()


def test_k8s_instance_is_the_prod_instance_plus_launcher_and_logs() -> None:
    prod, k8s = load_yaml(PROD_INSTANCE), load_yaml(K8S_INSTANCE)
    assert set(k8s) - set(prod) == K8S_ONLY_BLOCKS
    assert {key: k8s[key] for key in prod} == prod, "deploy/dagster-k8s.yaml drifted from deploy/dagster.yaml"


def _configurable(tmp_path: Path, block: str) -> ConfigurableClassData:
    """A block of the K8s instance as Dagster reads it from DAGSTER_HOME (the whole file is first
    validated against Dagster's instance schema)."""
    home = dagster_home_with(tmp_path, K8S_INSTANCE)
    dagster_instance_config(str(home))
    ref = InstanceRef.from_dir(str(home))
    return {"run_launcher": ref.run_launcher_data, "compute_logs": ref.compute_logs_data}[block]


def test_k8s_run_launcher_validates_against_dagster_k8s_schema(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PG_ENV.items():
        monkeypatch.setenv(name, value)
    data = _configurable(tmp_path, "run_launcher")
    assert (data.module_name, data.class_name) == ("dagster_k8s", "K8sRunLauncher")
    schema = resolve_to_config_type(K8sRunLauncher.config_type())
    result = process_config(schema, load_yaml(K8S_INSTANCE)["run_launcher"]["config"])
    assert result.success, [e.message for e in result.errors]
    config = result.value
    assert config["service_account_name"] == "batchrec-dagster"
    assert config["env_secrets"] == ["batchrec-secrets"] and config["env_config_maps"] == ["batchrec-config"]
    assert config["postgres_password_secret"] == "batchrec-postgresql"
    assert "job_image" not in config  # runs take the code server's image
    # the schema is strict: a misspelt key is an error, so the check above means something
    broken = {**load_yaml(K8S_INSTANCE)["run_launcher"]["config"], "env_secret": ["x"]}
    assert not process_config(schema, broken).success


def test_k8s_compute_logs_validate_against_dagster_gcp_schema(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**PG_ENV, "GCS_BUCKET": "my-bucket"}.items():
        monkeypatch.setenv(name, value)
    data = _configurable(tmp_path, "compute_logs")
    assert data.class_name == "GCSComputeLogManager"
    result = process_config(resolve_to_config_type(GCSComputeLogManager.config_type()),
                            load_yaml(K8S_INSTANCE)["compute_logs"]["config"])
    assert result.success, [e.message for e in result.errors]
    assert result.value["bucket"] == "my-bucket"


def test_helm_values_carry_the_same_instance() -> None:
    values, prod, k8s = load_yaml(HELM_VALUES), load_yaml(PROD_INSTANCE), load_yaml(K8S_INSTANCE)
    extra = values["additionalInstanceConfig"]
    # what the chart cannot render itself is deploy/dagster.yaml's blocks, verbatim ...
    assert extra == {key: prod[key] for key in extra}
    assert set(extra) == set(prod) - {"storage", "telemetry"}
    # ... and the chart's own fields for them are off, so no block is rendered twice
    daemon = values["dagsterDaemon"]
    assert not any(daemon[f]["enabled"] for f in ("runCoordinator", "runMonitoring", "runRetries"))
    assert not values["concurrency"]["enabled"] and not values["retention"]["enabled"]
    assert values["telemetry"] == prod["telemetry"]
    # storage: Cloud SQL with the driver deploy/dagster.yaml names; the password from a secret
    assert values["postgresql"]["enabled"] is False and not values["generatePostgresqlPasswordSecret"]
    assert values["postgresql"]["postgresqlScheme"] == prod["storage"]["postgres"]["postgres_db"]["scheme"]
    launcher = k8s["run_launcher"]["config"]
    assert values["global"]["postgresqlSecretName"] == launcher["postgres_password_secret"]
    # the run launcher as in deploy/dagster-k8s.yaml
    chart_launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert [c["name"] for c in chart_launcher["envConfigMaps"]] == launcher["env_config_maps"]
    assert [s["name"] for s in chart_launcher["envSecrets"]] == launcher["env_secrets"]
    assert (chart_launcher["labels"], chart_launcher["resources"], chart_launcher["failPodOnRunFailure"],
            chart_launcher["imagePullPolicy"]) == (launcher["labels"], launcher["resources"],
                                                    launcher["fail_pod_on_run_failure"],
                                                    launcher["image_pull_policy"])
    logs = values["computeLogManager"]["config"]["gcsComputeLogManager"]
    gcs = k8s["compute_logs"]["config"]
    assert (logs["prefix"], logs["localDir"], logs["uploadInterval"]) == (
        gcs["prefix"], gcs["local_dir"], gcs["upload_interval"])
    config_map = manifests()[("ConfigMap", "batchrec-config")]["data"]
    assert logs["bucket"] == config_map["GCS_BUCKET"]


def test_helm_values_use_workload_identity_and_kubernetes_secrets() -> None:
    values, launcher = load_yaml(HELM_VALUES), load_yaml(K8S_INSTANCE)["run_launcher"]["config"]
    account = values["serviceAccount"]
    assert account["create"] and account["name"] == values["global"]["serviceAccountName"] \
        == launcher["service_account_name"]
    gsa = account["annotations"]["iam.gke.io/gcp-service-account"]
    assert gsa.endswith(".iam.gserviceaccount.com") and "@" in gsa
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    assert {"name": "batchrec-secrets"} in deployment["envSecrets"]
    assert {"name": "batchrec-config"} in deployment["envConfigMaps"]
    assert deployment["codeServerArgs"][:2] == ["-m", "batchrec_dagster.defs.definitions"]
    # one image (and so one Dagster version) for the code server, Dagit, the daemon and the API
    images = {(part["image"]["repository"], part["image"]["tag"])
              for part in (deployment, values["dagsterWebserver"], values["dagsterDaemon"])}
    kustomize = load_yaml(HELM_VALUES.parent.parent / "k8s" / "kustomization.yaml")["images"][0]
    assert images == {(kustomize["newName"], kustomize["newTag"])}
    # that image runs as a non-root user: Dagit listens (and is probed) on an unprivileged port
    webserver = values["dagsterWebserver"]
    assert 1024 <= webserver["service"]["port"] == webserver["readinessProbe"]["httpGet"]["port"]
    assert "USER 10001" in (HELM_VALUES.parent.parent / "Dockerfile").read_text()
    # nothing secret is written in the values: no password field at all
    assert [key for key in _keys(values) if "password" in key.lower()] == ["generatePostgresqlPasswordSecret"]


def _keys(tree: object) -> list[str]:
    if isinstance(tree, dict):
        return [k for key, value in tree.items() for k in (key, *_keys(value))]
    if isinstance(tree, list):
        return [k for item in tree for k in _keys(item)]
    return []
