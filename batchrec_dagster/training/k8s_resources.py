"""Per-run Kubernetes resources for training, as the `dagster-k8s/config` tag that dagster-k8s reads.

With the K8sRunLauncher every run is a Kubernetes Job; this tag, on the run (job tags, a schedule's
or sensor's RunRequest) or on the asset's op_tags (read by the k8s_job_executor per step), is
merged into the run pod that dagster-k8s builds. On CUDA the pod asks for one `nvidia.com/gpu`
and lands on a GPU node pool: GKE labels those nodes with `cloud.google.com/gke-accelerator` and
taints them `nvidia.com/gpu=present:NoSchedule`, so the pod needs the matching toleration. On the
CPU it asks for CPU and memory only and never lands on (or holds) a GPU node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY
# the concurrency pool of the training step (recvae_model): a run that needs it trains, whichever
# job it runs (defs/instance/run_queue.py gives such runs the training run tags)
TRAINING_POOL = "training"
GPU_RESOURCE = "nvidia.com/gpu"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"


@dataclass(frozen=True)
class TrainingPodResources:
    """What one training pod asks for; the defaults fit the hourly GitHub-stars run."""

    cpu: str = "4"
    memory: str = "12Gi"
    memory_limit: str = "16Gi"
    gpu_type: str = "nvidia-l4"  # the GKE accelerator type of the GPU node pool
    gpu_cpu: str = "4"
    gpu_memory: str = "16Gi"
    gpu_memory_limit: str = "24Gi"


def training_run_tags(device: str | None, resources: TrainingPodResources | None = None) -> dict[str, str]:
    """`{"dagster-k8s/config": "<json>"}` for a training run on `device`.

    `device`: "cuda" or "cuda:N" asks for a GPU node; "cpu" or None (the training config's
    default: CUDA only when present, which a CPU pod never has) asks for CPU. The value is a JSON
    string because run tags are strings (job tags accept it as well).
    """
    res = resources or TrainingPodResources()
    kind = (device or "cpu").strip().lower()
    if kind == "cpu":
        config = {"container_config": {"resources": {
            "requests": {"cpu": res.cpu, "memory": res.memory},
            "limits": {"memory": res.memory_limit}}}}
    elif kind == "cuda" or (kind.startswith("cuda:") and kind[5:].isdigit()):
        config = {
            "container_config": {"resources": {
                "requests": {"cpu": res.gpu_cpu, "memory": res.gpu_memory, GPU_RESOURCE: "1"},
                # extended resources must be requested and limited alike
                "limits": {"memory": res.gpu_memory_limit, GPU_RESOURCE: "1"}}},
            "pod_spec_config": {
                "node_selector": {GKE_ACCELERATOR_LABEL: res.gpu_type},
                "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]},
        }
    else:
        raise ValueError(f"device {device!r} is neither 'cpu' nor 'cuda' / 'cuda:N'")
    return {K8S_CONFIG_TAG: json.dumps(config, sort_keys=True)}
