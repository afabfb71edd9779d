"""Multi-node replicas: a LeaderWorkerSet (``leaderworkerset.x-k8s.io/v1``) with an MPI leader.

When one node cannot hold a replica (DeepSeek-R1 in FP8 on H100: 16 GPUs over two nodes), each
replica is a group of pods, one per node. The leader runs ``mpirun`` over the group and serves the
OpenAI-style API of ``trtllm-serve`` (Triton's llmapi model does not do inter-node tensor
parallelism), as TensorRT-LLM's DeepSeek-V3 recipe runs two nodes
(examples/models/core/deepseek_v3/README.md, "Multi-node / mpirun": ``mpirun -H <HOST1>:8,<HOST2>:8
-n 16 trtllm-llmapi-launch trtllm-... --tp 16 --ep 16`` with ``enable_attention_dp`` in
``--extra_llm_api_options``). Remote ranks start through :mod:`.mpi_agent` instead of ssh, which
the image does not have. Pure: spec + plan in, manifest out.
"""

from __future__ import annotations

import shlex
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.constants import LWS_API_VERSION, LWS_KIND
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.builders import mpi_agent, serving
from deepseek_operator.images import profile_for
from deepseek_operator.planning.sizing import max_num_tokens
from deepseek_operator.planning.types import Plan

LEADER_PORT = 8000
EXTRA_OPTIONS_PATH = "/tmp/dso-extra-llm-api-options.yaml"
# Fabrics whose NCCL transport registers GPU and host memory with the RDMA NIC: that needs
# locked memory, so the container gets IPC_LOCK (as the Kubeflow and NVIDIA network-operator
# examples for InfiniBand / RoCE pods do).
RDMA_FABRICS = ("infiniband", "roce")


def pod_env(plan: Plan) -> list[dict[str, str]]:
    """The environment every pod of the group has: the plan's NCCL profile (with NCCL_DEBUG, WARN
    unless the profile sets it) and the agent's port. The leader forwards the same variables to
    every rank with ``mpirun -x``."""
    env = dict(plan.nccl_env)
    env.setdefault("NCCL_DEBUG", "WARN")
    out = [{"name": k, "value": v} for k, v in sorted(env.items())]
    return [*out, {"name": "DSO_MPI_AGENT_PORT", "value": str(mpi_agent.AGENT_PORT)}]


def forwarded_variables(plan: Plan) -> list[str]:
    """The variables ``mpirun -x`` hands to every rank: the pod's PATH and LD_LIBRARY_PATH (remote
    ranks start through a fresh shell, which would not have the image's) and every NCCL variable."""
    return ["PATH", "LD_LIBRARY_PATH", *sorted({*dict(plan.nccl_env), "NCCL_DEBUG"})]


def extra_llm_api_options(plan: Plan) -> str:
    """The LLM-API options file of the leader (YAML): attention data parallelism for a replica run
    with expert parallelism, as the DeepSeek-V3 recipe's extra-llm-api-config.yml sets it."""
    lines = ["print_iter_log: false"]
    if plan.expert_parallel > 1:
        lines.append("enable_attention_dp: true")
    return "\n".join(lines) + "\n"


def leader_command(spec: DeploymentSpec, plan: Plan) -> list[str]:
    """Start the agent, wait until every worker's agent answers, then ``mpirun`` over the group's pods
    (LeaderWorkerSet's headless Service names them) with ``trtllm-serve`` on every rank."""
    lay = serving.layout(spec, plan)
    profile = profile_for(spec.engine.image).profile
    per_node = plan.gpus_per_replica // plan.nodes_per_replica
    exports = " ".join(f"-x {v}" for v in forwarded_variables(plan))
    serve = [
        "trtllm-llmapi-launch",
        "trtllm-serve",
        lay.checkpoint_dir,
        "--backend",
        "pytorch",
        "--tp_size",
        str(plan.tensor_parallel),
        "--pp_size",
        str(plan.pipeline_parallel),
        *(["--ep_size", str(plan.expert_parallel)] if plan.expert_parallel > 1 else []),
        "--max_batch_size",
        str(plan.max_batch_size),
        "--max_seq_len",
        str(spec.engine.max_input_tokens + spec.engine.max_output_tokens),
        "--max_num_tokens",
        str(max_num_tokens(spec.engine.max_input_tokens)),
        "--kv_cache_free_gpu_memory_fraction",
        str(spec.engine.kv_cache_memory_fraction),
        "--extra_llm_api_options",
        EXTRA_OPTIONS_PATH,
        "--host",
        "0.0.0.0",
        "--port",
        str(LEADER_PORT),
    ]
    mpirun = (
        f"exec mpirun --allow-run-as-root --prefix {shlex.quote(profile.mpi_prefix)} "
        f"-mca plm_rsh_agent {mpi_agent.AGENT_PATH} -mca plm_rsh_no_tree_spawn 1 "
        f'-np {plan.gpus_per_replica} -H "$HOSTS" {exports} {mpi_agent.quote_all(serve)}'
    )
    then = "\n".join(
        [
            mpi_agent.group_hosts_shell(per_node),
            f"printf '%s' {shlex.quote(extra_llm_api_options(plan))} > {EXTRA_OPTIONS_PATH}",
            'echo "deepseek-operator: MPI hosts $HOSTS"',
            f'python3 {mpi_agent.AGENT_PATH} wait "$LWS_LEADER_ADDRESS" $WORKERS',
            mpirun,
        ]
    )
    return mpi_agent.agent_command(daemon_only=False, then=then)


def worker_command() -> list[str]:
    """A worker only runs the agent: the leader's mpirun starts its ranks through it."""
    return mpi_agent.agent_command(daemon_only=True)


def _security(plan: Plan) -> dict[str, Any]:
    # MPI between the group's pods runs as the image's default user (root in NVIDIA's images).
    sec: dict[str, Any] = {"allowPrivilegeEscalation": False}
    if plan.fabric in RDMA_FABRICS:
        sec["capabilities"] = {"add": ["IPC_LOCK"]}
    return sec


def _init_containers(spec: DeploymentSpec, plan: Plan, role: str, mounts: list[Any]) -> list[Any]:
    """The model download of a uri source: each pod fetches into its own folder; with a shared cache
    volume the leader fetches once and the workers wait for its READY marker."""
    if not spec.model.source.uri:
        return []
    lay = serving.layout(spec, plan)
    writable = [{**m, "readOnly": False} if m["name"] == "model-store" else m for m in mounts]
    if role == "leader" or lay.cache_volume is None:
        return [serving.fetch_container(spec, lay, writable)]
    ready = shlex.quote(f"{lay.checkpoint_dir}/.READY")
    return [
        {
            "name": "wait-for-model",
            "image": spec.engine.image,
            "command": ["sh", "-c", f"until [ -f {ready} ]; do echo waiting for {ready}; sleep 10; done"],
            "volumeMounts": mounts,
        }
    ]


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
        "env": pod_env(plan),
        "ports": [{"name": "mpi-agent", "containerPort": mpi_agent.AGENT_PORT, "protocol": "TCP"}],
        "resources": serving.gpu_resources(plan, per_node, serving.host_memory_gib(plan), 4 * per_node),
        "volumeMounts": [*mounts, {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": _security(plan),
    }
    if role == "leader":
        container["ports"].insert(0, {"name": "http", "containerPort": LEADER_PORT, "protocol": "TCP"})
        budget = serving.startup_budget_seconds(plan)
        probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
        container["startupProbe"] = {**probe, "failureThreshold": budget // 10}
        container["readinessProbe"] = {**probe, "failureThreshold": 3}
    pod: dict[str, Any] = {
        "metadata": {"labels": {**names.labels(owner_name, names.COMPONENT_SERVING)}},
        "spec": {
            "tolerations": [serving.GPU_TOLERATION, *spec.gpu.tolerations],
            "initContainers": _init_containers(spec, plan, role, mounts),
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
    """A LeaderWorkerSet: ``plan.nodes_per_replica`` pods per replica, each with its node's share of GPUs.

    ``startupPolicy: LeaderCreated`` creates the workers with the leader; the leader itself waits
    for every worker's agent before it starts mpirun (the old command started at once and failed
    whenever a worker was slower)."""
    name = owner["metadata"]["name"]
    revision = serving.revision_hash(spec, plan)
    leader = _pod(name, spec, plan, "leader", leader_command(spec, plan))
    worker = _pod(name, spec, plan, "worker", worker_command())
    for pod in (leader, worker):
        pod["metadata"]["labels"].update(names.serving_pod_labels(name, revision))
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
