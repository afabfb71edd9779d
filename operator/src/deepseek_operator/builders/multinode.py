"""Multi-node replicas: a LeaderWorkerSet (``leaderworkerset.x-k8s.io/v1``) with an MPI leader.

When one node cannot hold a replica (DeepSeek-R1 in FP8 on H100: 16 GPUs over two
nodes), each replica is a group of pods, one per node: the leader runs ``mpirun``
over the group (tensor parallelism inside each node, pipeline parallelism across
nodes) and serves the OpenAI-style API of ``trtllm-serve`` (Triton's llmapi model
does not do inter-node tensor parallelism); the workers run an SSH daemon for
MPI. Pure: spec + plan in, manifest out.
"""

from __future__ import annotations

import shlex
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.constants import LWS_API_VERSION, LWS_KIND
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.builders import serving
from deepseek_operator.planning.sizing import max_num_tokens
from deepseek_operator.planning.types import Plan

LEADER_PORT = 8000


def leader_command(spec: DeploymentSpec, plan: Plan) -> list[str]:
    """``mpirun`` over the group's pods (their DNS names come from LeaderWorkerSet's headless Service)."""
    lay = serving.layout(spec, plan)
    per_node = plan.gpus_per_replica // plan.nodes_per_replica
    hosts = (
        'HOSTS=""; for i in $(seq 0 $((LWS_GROUP_SIZE - 1))); do '
        'if [ "$i" = 0 ]; then h="$LWS_LEADER_ADDRESS"; else h="${LWS_LEADER_ADDRESS/-0./-0-$i.}"; fi; '
        f'HOSTS="$HOSTS${{HOSTS:+,}}$h:{per_node}"; done'
    )
    serve = (
        f'mpirun --allow-run-as-root -np {plan.gpus_per_replica} -H "$HOSTS" '
        "-x NCCL_DEBUG -x NCCL_SOCKET_IFNAME -x NCCL_IB_DISABLE "
        f"trtllm-llmapi-launch trtllm-serve {shlex.quote(lay.checkpoint_dir)} --backend pytorch "
        f"--tp_size {plan.tensor_parallel} --pp_size {plan.pipeline_parallel} "
        f"--max_batch_size {plan.max_batch_size} "
        f"--max_seq_len {spec.engine.max_input_tokens + spec.engine.max_output_tokens} "
        f"--max_num_tokens {max_num_tokens(spec.engine.max_input_tokens)} "
        f"--kv_cache_free_gpu_memory_fraction {spec.engine.kv_cache_memory_fraction} "
        f"--host 0.0.0.0 --port {LEADER_PORT}"
    )
    return ["bash", "-c", f"set -eu; {hosts}; exec {serve}"]


def _pod(owner_name: str, spec: DeploymentSpec, plan: Plan, role: str, command: list[str]) -> dict[str, Any]:
    lay = serving.layout(spec, plan)
    volumes, mounts = serving.source_volumes(spec, lay, read_only=True)
    per_node = plan.gpus_per_replica // plan.nodes_per_replica
    volumes.append(
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{serving.shm_size_gib(plan)}Gi"}}
    )
    container: dict[str, Any] = {
        "name": role,
        "image": spec.engine.image,
        "command": command,
        "env": [{"name": k, "value": v} for k, v in plan.nccl_env],
        "resources": serving.gpu_resources(plan, per_node, serving.host_memory_gib(plan), 4 * per_node),
        "volumeMounts": [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
        # MPI over SSH between the group's pods needs root and no seccomp filter in NVIDIA's images.
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if role == "leader":
        container["ports"] = [{"name": "http", "containerPort": LEADER_PORT, "protocol": "TCP"}]
        budget = serving.startup_budget_seconds(plan)
        probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
        container["startupProbe"] = {**probe, "failureThreshold": budget // 10}
        container["readinessProbe"] = {**probe, "failureThreshold": 3}
    pod: dict[str, Any] = {
        "metadata": {"labels": {**names.labels(owner_name, names.COMPONENT_SERVING)}},
        "spec": {
            "tolerations": [serving.GPU_TOLERATION, *spec.gpu.tolerations],
            "containers": [container],
            "volumes": volumes,
            "enableServiceLinks": False,
        },
    }
    if affinity := serving.gpu_affinity(plan):
        pod["spec"]["affinity"] = affinity
    if spec.gpu.node_selector:
        pod["spec"]["nodeSelector"] = dict(spec.gpu.node_selector)
    return pod


def build_leader_worker_set(
    owner: dict[str, Any], spec: DeploymentSpec, plan: Plan, replicas: int | None
) -> dict[str, Any]:
    """A LeaderWorkerSet: ``plan.nodes_per_replica`` pods per replica, each with its node's share of GPUs."""
    name = owner["metadata"]["name"]
    revision = serving.revision_hash(spec, plan)
    leader = _pod(name, spec, plan, "leader", leader_command(spec, plan))
    worker = _pod(
        name, spec, plan, "worker", ["bash", "-c", "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e"]
    )
    for pod in (leader, worker):
        pod["metadata"]["labels"][names.REVISION_LABEL] = revision
        pod["metadata"]["annotations"] = {names.REVISION_LABEL: revision}
    lws_spec: dict[str, Any] = {
        "leaderWorkerTemplate": {
            "size": plan.nodes_per_replica,
            "restartPolicy": "RecreateGroupOnPodRestart",
            "leaderTemplate": leader,
            "workerTemplate": worker,
        },
        "rolloutStrategy": {
            "type": "RollingUpdate",
            "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0},
        },
        "startupPolicy": "LeaderCreated",
    }
    if replicas is not None:
        lws_spec["replicas"] = replicas
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": LWS_KIND,
        "metadata": serving.revision_metadata(owner, names.workload_name(name, revision), revision),
        "spec": lws_spec,
    }
