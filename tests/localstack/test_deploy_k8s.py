"""Kubernetes: the training run's tags as dagster-k8s reads them, the run pod dagster-k8s builds from
them, and the manifests of deploy/k8s checked against the Kubernetes API models.

No cluster runs here: the Job is built by dagster-k8s's own code (what K8sRunLauncher.launch_run
does before it calls the API), the manifests are parsed into the official `kubernetes` client's
models (unknown or misspelt fields fail), and kubectl builds the kustomization offline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dagster import DagsterRun
from dagster._config import process_config, resolve_to_config_type
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    USER_DEFINED_K8S_CONFIG_KEY,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
from kubernetes.client import (
    V1ConfigMap,
    V1Deployment,
    V1Namespace,
    V1PodDisruptionBudget,
    V1Service,
    V1ServiceAccount,
    V2HorizontalPodAutoscaler,
)

from batchrec_dagster.settings import PROJECT_ROOT
from batchrec_dagster.training.k8s_resources import (
    GKE_ACCELERATOR_LABEL,
    GPU_RESOURCE,
    K8S_CONFIG_TAG,
    training_run_tags,
)
from tests.harness.deploy_files import DEPLOY, K8S_DIR, K8S_INSTANCE, load_yaml, manifests

MODELS = {"Deployment": V1Deployment, "Service": V1Service,
          "HorizontalPodAutoscaler": V2HorizontalPodAutoscaler, "PodDisruptionBudget": V1PodDisruptionBudget,
          "ConfigMap": V1ConfigMap, "ServiceAccount": V1ServiceAccount, "Namespace": V1Namespace}


def test_training_tags_are_what_dagster_k8s_reads() -> None:
    assert K8S_CONFIG_TAG == USER_DEFINED_K8S_CONFIG_KEY
    gpu = get_user_defined_k8s_config(training_run_tags("cuda"))
    resources = gpu.container_config["resources"]
    assert resources["limits"][GPU_RESOURCE] == "1" and resources["requests"][GPU_RESOURCE] == "1"
    assert gpu.pod_spec_config["node_selector"] == {GKE_ACCELERATOR_LABEL: "nvidia-l4"}
    assert gpu.pod_spec_config["tolerations"] == [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    assert get_user_defined_k8s_config(training_run_tags("cuda:1")) == gpu

    for device in ("cpu", None, " CPU "):
        cpu = get_user_defined_k8s_config(training_run_tags(device))
        assert GPU_RESOURCE not in json.dumps(cpu.to_dict())
        assert cpu.container_config["resources"]["requests"] == {"cpu": "4", "memory": "12Gi"}
        assert not cpu.pod_spec_config  # no node selector, no toleration: any CPU node
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(ValueError, match="neither 'cpu' nor 'cuda'"):
            training_run_tags(bad)


@pytest.fixture
def run_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> K8sRunLauncher:
    """deploy/dagster-k8s.yaml's launcher, pointed at a kubeconfig file instead of the cluster it
    would run in (nothing is contacted: the Job is only built)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "offline", "user": {"token": "unused"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}]}))
    config = process_config(resolve_to_config_type(K8sRunLauncher.config_type()),
                            load_yaml(K8S_INSTANCE)["run_launcher"]["config"]).value
    return K8sRunLauncher(**{**config, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})


def _run_pod(run_launcher: K8sRunLauncher, tags: dict[str, str]):
    """The Job dagster-k8s submits for a run with these tags (its launch path, without the API call)."""
    run = DagsterRun(job_name="hourly_training_job", run_id="0f0e0d0c-0000-4000-8000-000000000001", tags=tags)
    context = K8sContainerContext.create_for_run(run, run_launcher, include_run_tags=True)
    image = "asia-northeast3-docker.pkg.dev/my-gcp-project/batchrec/batchrec:0.1.0"
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image, run_launcher=run_launcher),
        args=["dagster", "api", "execute_run", "{}"], job_name="dagster-run-test",
        pod_name="dagster-run-test",
        component="run_worker", user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "hourly_training_job"})
    return job.spec.template.spec


def test_gpu_training_run_pod_gets_a_gpu_node(run_launcher: K8sRunLauncher) -> None:
    pod = _run_pod(run_launcher, training_run_tags("cuda"))
    [container] = pod.containers
    # the tag's resources merged into the launcher's defaults
    assert container.resources.limits == {"memory": "24Gi", GPU_RESOURCE: "1"}
    assert container.resources.requests == {"cpu": "4", "memory": "16Gi", GPU_RESOURCE: "1"}
    assert pod.node_selector == {GKE_ACCELERATOR_LABEL: "nvidia-l4"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
        (GPU_RESOURCE, "Exists", "NoSchedule")]
    # identity, settings and secrets of every run pod
    assert pod.service_account_name == "batchrec-dagster"
    assert container.image.endswith("/batchrec:0.1.0")
    sources = {(s.config_map_ref and s.config_map_ref.name, s.secret_ref and s.secret_ref.name)
               for s in container.env_from}
    assert sources == {("batchrec-config", None), (None, "batchrec-secrets")}
    password = next(e for e in container.env if e.name == "DAGSTER_PG_PASSWORD")
    assert password.value_from.secret_key_ref.name == "batchrec-postgresql"
    assert any(e.name == "DAGSTER_HOME" and e.value == "/opt/dagster/dagster_home" for e in container.env)


def test_cpu_training_run_pod_stays_off_gpu_nodes(run_launcher: K8sRunLauncher) -> None:
    pod = _run_pod(run_launcher, training_run_tags("cpu"))
    [container] = pod.containers
    assert container.resources.requests == {"cpu": "4", "memory": "12Gi"}
    assert container.resources.limits == {"memory": "16Gi"}
    assert not pod.node_selector and not pod.tolerations
    # a run without the tag (not training) gets the launcher's defaults
    plain = _run_pod(run_launcher, {}).containers[0]
    assert plain.resources.requests == {"cpu": "1", "memory": "4Gi"}


def test_manifests_are_valid_kubernetes_objects() -> None:
    objects = manifests()
    for (kind, name), doc in objects.items():
        # strict: every field must exist in the Kubernetes API model of that kind and version
        model = k8s_model_from_dict(MODELS[kind], k8s_snake_case_dict(MODELS[kind], doc))
        assert model.metadata.name == name
    assert {kind for kind, _ in objects} >= {"Deployment", "Service", "HorizontalPodAutoscaler"}


def test_api_deployment_probes_resources_and_secrets() -> None:
    objects = manifests()
    deployment = objects[("Deployment", "batchrec-api")]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "batchrec"  # set by the kustomization's images entry
    assert container["command"][:2] == ["batchrec", "serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert {"secretRef": {"name": "batchrec-secrets"}} in container["envFrom"]
    assert {"configMapRef": {"name": "batchrec-config"}} in container["envFrom"]
    port = container["ports"][0]
    assert container["command"][container["command"].index("--port") + 1] == str(port["containerPort"])
    # the Service and the autoscaler point at this Deployment
    service = objects[("Service", "batchrec-api")]["spec"]
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["ports"][0]["targetPort"] == port["name"]
    hpa = objects[("HorizontalPodAutoscaler", "batchrec-api")]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "batchrec-api"}
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    # Workload Identity for reading the model bucket
    account = objects[("ServiceAccount", pod["serviceAccountName"])]
    gsa = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert gsa.endswith(".iam.gserviceaccount.com")


def test_kubectl_builds_the_kustomization_offline(tmp_path: Path) -> None:
    """`kubectl apply --dry-run=client` needs an API server even with --validate=false (it asks the
    server which resource each kind is), so the offline check is `kubectl kustomize`: it parses
    every manifest, applies namespace and image, and fails on malformed or duplicate objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian package kubectl)")
    result = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(built) == len(manifests())
    assert all(doc["metadata"].get("namespace") == "batchrec" for doc in built if doc["kind"] != "Namespace")
    [deployment] = [doc for doc in built if doc["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "asia-northeast3-docker.pkg.dev/my-gcp-project/batchrec/batchrec:0.1.0"
    # and it does reject a broken manifest (so the pass above means something)
    broken = tmp_path / "k8s"
    shutil.copytree(K8S_DIR, broken)
    api = broken / "api.yaml"
    api.write_text(api.read_text().replace("kind: Service\n", "kind: [\n", 1))
    rejected = subprocess.run([kubectl, "kustomize", str(broken)], capture_output=True, timeout=60)
    assert rejected.returncode != 0


def test_dockerfile_cpu_by_default_cuda_by_argument() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in lines and "FROM ${BASE_IMAGE}" in lines
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in lines
    assert 'RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"' in lines
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject  # the same pin as the project
    assert not any(line.startswith("ENTRYPOINT") for line in lines)  # the chart passes whole commands
    # everything it copies exists; nothing is fetched at build time beyond pip
    for line in lines:
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                assert (PROJECT_ROOT / source).exists(), source
    assert not any(word in text for word in ("wget", "curl", "huggingface", "gsutil"))
    assert "USER 10001" in lines


def test_the_training_job_carries_the_device_tags() -> None:
    """The job's runs carry dagster-k8s's pod config for BATCHREC_TRAINING_DEVICE (CPU when unset)."""
    from batchrec_dagster.defs.definitions import build_definitions
    from batchrec_dagster.settings import load_settings
    from batchrec_dagster.training.k8s_resources import K8S_CONFIG_TAG, training_run_tags

    def job_tags(settings):
        return build_definitions(settings).resolve_job_def("hourly_training_job").tags

    assert job_tags(load_settings({}))[K8S_CONFIG_TAG] == training_run_tags(None)[K8S_CONFIG_TAG]
    settings = load_settings({"BATCHREC_TRAINING_DEVICE": " CUDA "})
    assert settings.training_device == "cuda"
    assert "nvidia.com/gpu" in training_run_tags("cuda")[K8S_CONFIG_TAG]
    assert job_tags(settings)[K8S_CONFIG_TAG] == training_run_tags("cuda")[K8S_CONFIG_TAG]
