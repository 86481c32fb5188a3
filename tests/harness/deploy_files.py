"""Loading the files of deploy/ the way Dagster and Kubernetes tools read them (helpers for the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from batchrec_dagster.settings import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
PROD_INSTANCE = DEPLOY / "dagster.yaml"
K8S_INSTANCE = DEPLOY / "dagster-k8s.yaml"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
K8S_DIR = DEPLOY / "k8s"
# the blocks of the instance that only a cluster needs
K8S_ONLY_BLOCKS = {"run_launcher", "compute_logs"}
# the variables deploy/dagster.yaml reads, with values that make Dagster's config processing pass
PG_ENV = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "dagster",
          "DAGSTER_PG_PASSWORD": "not-a-secret", "DAGSTER_PG_DB": "dagster"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object of deploy/k8s by (kind, name)."""
    objects = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_documents(path):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def dagster_home_with(tmp_path: Path, instance_yaml: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml.read_text())
    return home
