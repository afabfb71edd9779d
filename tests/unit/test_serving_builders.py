"""The serving builders: Deployment, engine Job, Service, PDB, HPA, revision and cache keys."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import pytest

from deepseek_operator.api import names
from deepseek_operator.api.spec import parse_spec
from deepseek_operator.builders import serving
from deepseek_operator.errors import SpecError
from deepseek_operator.planning.placement import plan_deployment
from deepseek_operator.planning.types import Plan

OWNER = {
    "apiVersion": "serving.deepseek.ai/v1alpha1",
    "kind": "DeepSeekDeployment",
    "metadata": {"name": "r1-qwen-7b", "namespace": "llm", "uid": "0000-1111", "generation": 1},
}
BASE: dict[str, Any] = {
    "model": {
        "id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "source": {"pvc": {"claimName": "store", "path": "q7"}},
    },
    "engine": {"runtime": "tensorrt-llm", "precision": "bf16"},
    "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"], "perReplica": 1},
    "replicas": 2,
}


def _with(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    node = spec
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return spec


def _deployment(raw: dict[str, Any]) -> tuple[dict[str, Any], Plan]:
    spec = parse_spec(raw)
    plan = plan_deployment(spec)
    return serving.build_deployment(OWNER, spec, plan, "/stock/models", spec.replicas), plan


def _revision(raw: dict[str, Any]) -> str:
    spec = parse_spec(raw)
    return serving.revision_hash(spec, plan_deployment(spec))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("engine.precision", "fp8"),
        ("engine.maxInputTokens", 8192),
        ("engine.image", "example.org/triton:custom"),
        ("model.revision", "v2"),
        ("gpu.products", ["NVIDIA-H200"]),
        ("nccl.env", {"NCCL_SOCKET_NTHREADS": "4"}),
        ("engine.maxQueueDelayMicroseconds", 500),
    ],
)
def test_pod_affecting_fields_change_the_revision(path: str, value: Any) -> None:
    assert _revision(_with(path, value)) != _revision(BASE)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("replicas", 5),
        ("rollout.analysis.maxP99LatencyMs", 900),
        ("rollout.analysis.accuracy.minScore", 0.5),
        ("rollout.canary.replicas", 2),
        ("service.type", "LoadBalancer"),
        ("autoscaling", {"minReplicas": 1, "maxReplicas": 3}),
    ],
)
def test_scaling_and_thresholds_do_not_change_the_revision(path: str, value: Any) -> None:
    assert _revision(_with(path, value)) == _revision(BASE)


def test_deployment_is_production_shaped() -> None:
    dep, plan = _deployment(BASE)
    pod = dep["spec"]["template"]["spec"]
    (triton,) = pod["containers"]
    assert dep["spec"]["replicas"] == 2
    assert {p["name"]: p["containerPort"] for p in triton["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    assert "--metrics-config=summary_latencies=true" in triton["command"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert triton["securityContext"]["allowPrivilegeEscalation"] is False
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in triton["volumeMounts"]
    store = next(m for m in triton["volumeMounts"] if m["name"] == "model-store")
    assert store["readOnly"] is True
    assert serving.GPU_TOLERATION in pod["tolerations"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchExpressions"][0]["values"] == ["NVIDIA-H100-80GB-HBM3"]
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "0000-1111"
    assert dep["spec"]["template"]["metadata"]["labels"][names.REVISION_LABEL] == serving.revision_hash(
        parse_spec(BASE), plan
    )
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-engine", "assemble-model-repository"]


def test_startup_budget_grows_with_model_size() -> None:
    small, _ = _deployment(BASE)
    big, _ = _deployment(
        {
            **BASE,
            "model": {**BASE["model"], "id": "deepseek-ai/DeepSeek-R1-Distill-Llama-70B"},
            "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"], "tensorParallel": 4},
        }
    )

    def budget(dep: dict[str, Any]) -> int:
        probe = dep["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
        return int(probe["failureThreshold"] * probe["periodSeconds"])

    assert budget(big) > budget(small) >= 600


def test_multi_gpu_engine_runs_one_mpi_rank_per_gpu() -> None:
    dep, plan = _deployment(_with("gpu", {"products": ["NVIDIA-H100-80GB-HBM3"], "tensorParallel": 4}))
    cmd = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[:2] == ["mpirun", "--allow-run-as-root"]
    assert cmd.count("tritonserver") == 4 == plan.world_size
    assert cmd.count("--load-model=tensorrt_llm") == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_credentials_never_appear_as_values() -> None:
    raw = _with(
        "model.source", {"uri": "hf://deepseek-ai/DeepSeek-V2-Lite-Chat", "credentialsSecret": "hf-token"}
    )
    raw["engine"] = {"runtime": "pytorch"}
    dep, _ = _deployment(raw)
    pod = dep["spec"]["template"]["spec"]
    secret_volume = next(v for v in pod["volumes"] if v.get("secret"))
    assert secret_volume["secret"]["secretName"] == "hf-token"
    text = json.dumps(pod)
    assert "secretKeyRef" not in text  # mounted as files, not injected into the environment
    for container in pod["containers"] + pod["initContainers"]:
        for env in container.get("env", []):
            assert env["value"].startswith(serving.CREDENTIALS_MOUNT) or "NCCL" in env["name"]
    assert pod["initContainers"][0]["name"] == "fetch-model"


def test_engine_path_from_uri_needs_a_cache_volume() -> None:
    raw = _with("model.source", {"uri": "s3://bucket/qwen7b"})
    with pytest.raises(SpecError, match=r"spec\.engine\.cacheClaimName"):
        _deployment(raw)
    raw["engine"]["cacheClaimName"] = "engine-cache"
    dep, _ = _deployment(raw)
    vols = dep["spec"]["template"]["spec"]["volumes"]
    assert vols[0]["persistentVolumeClaim"] == {"claimName": "engine-cache", "readOnly": True}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("engine.precision", "fp8"),
        ("gpu.tensorParallel", 2),
        ("engine.maxInputTokens", 2048),
        ("engine.maxOutputTokens", 4096),
        ("engine.maxBatchSize", 16),
        ("engine.image", "example.org/triton:custom"),
        ("gpu.products", ["NVIDIA-A100-SXM4-80GB"]),
        ("model.revision", "v2"),
    ],
)
def test_engine_cache_key_covers_what_an_engine_is_tied_to(path: str, value: Any) -> None:
    def key(raw: dict[str, Any]) -> str:
        if path == "gpu.tensorParallel":
            raw["gpu"].pop("perReplica", None)
        spec = parse_spec(raw)
        return serving.engine_cache_key(spec, plan_deployment(spec))

    assert key(_with(path, value)) != key(copy.deepcopy(BASE))


def test_engine_cache_key_ignores_replicas_and_thresholds() -> None:
    a, b = parse_spec(BASE), parse_spec(_with("replicas", 7))
    assert serving.engine_cache_key(a, plan_deployment(a)) == serving.engine_cache_key(b, plan_deployment(b))


def test_engine_job_builds_once_into_the_cache() -> None:
    spec = parse_spec(_with("engine.precision", "fp8"))
    plan = plan_deployment(spec)
    job = serving.build_engine_job(OWNER, spec, plan)
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    key = serving.engine_cache_key(spec, plan)
    assert (
        f"/models/.deepseek-operator/engines/{key}/READY" in script.splitlines()[1]
    )  # cache hit exits first
    assert "quantize.py" in script and "--qformat fp8" in script
    assert f"--max_batch_size {plan.max_batch_size}" in script
    assert "--max_input_len 4096 --max_seq_len 5120" in script
    assert job["metadata"]["name"] == names.engine_job_name("r1-qwen-7b", key)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_service_and_pdb() -> None:
    spec = parse_spec(_with("service", {"type": "NodePort"}))
    svc = serving.build_service(OWNER, spec)
    assert svc["spec"]["type"] == "NodePort"
    assert [p["port"] for p in svc["spec"]["ports"]] == [8000, 8001, 8002]
    pdb = serving.build_pdb(OWNER, "abc123")
    assert pdb["spec"]["maxUnavailable"] == 1
    # The PDB covers the stable revision's pods only (a canary's or standby's pods whose ReplicaSet
    # goes away must not make the disruption controller warn); the Service the pods labelled for
    # traffic (never a standby).
    selected = pdb["spec"]["selector"]["matchLabels"]
    assert selected == {
        **names.selector(OWNER["metadata"]["name"], names.COMPONENT_SERVING),
        names.REVISION_LABEL: "abc123",
    }
    assert {k: v for k, v in selected.items() if k != names.REVISION_LABEL} | {
        names.TRAFFIC_LABEL: names.TRAFFIC_ON
    } == svc["spec"]["selector"]


def test_hpa_only_with_autoscaling_and_then_replicas_are_left_to_it() -> None:
    assert serving.build_hpa(OWNER, parse_spec(BASE), "r1-qwen-7b-abc") is None
    raw = _with("autoscaling", {"minReplicas": 2, "maxReplicas": 6, "targetGPUUtilization": 65})
    hpa = serving.build_hpa(OWNER, parse_spec(raw), "r1-qwen-7b-abc")
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "r1-qwen-7b-abc"
    # A canary that took a stable replica's GPUs lowers the ceiling while it runs, never below min.
    lent = serving.build_hpa(OWNER, parse_spec(raw), "r1-qwen-7b-abc", lent_replicas=1)
    assert lent is not None and lent["spec"]["maxReplicas"] == 5
    floor = serving.build_hpa(OWNER, parse_spec(raw), "r1-qwen-7b-abc", lent_replicas=10)
    assert floor is not None and floor["spec"]["maxReplicas"] == 2
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "65"
    spec = parse_spec(raw)
    dep = serving.build_deployment(OWNER, spec, plan_deployment(spec), "/stock", None)
    assert "replicas" not in dep["spec"]


def test_plan_is_frozen_and_hashable_into_the_revision() -> None:
    spec = parse_spec(BASE)
    plan = plan_deployment(spec)
    other = dataclasses.replace(plan, max_batch_size=plan.max_batch_size + 1)
    assert serving.revision_hash(spec, plan) != serving.revision_hash(spec, other)


def test_revision_ignores_plan_figures_that_do_not_shape_the_pods() -> None:
    # An operator upgrade that refines an estimate must not roll every deployment.
    spec = parse_spec(BASE)
    plan = plan_deployment(spec)
    other = dataclasses.replace(
        plan, weights_gib=plan.weights_gib + 1, estimated_gpu_memory_gib=plan.estimated_gpu_memory_gib + 3
    )
    assert serving.revision_hash(spec, plan) == serving.revision_hash(spec, other)


def test_engine_job_carries_the_revision_it_builds_for() -> None:
    spec = parse_spec(BASE)
    plan = plan_deployment(spec)
    job = serving.build_engine_job(OWNER, spec, plan)
    assert job["metadata"]["labels"][names.REVISION_LABEL] == serving.revision_hash(spec, plan)
    assert job["metadata"]["annotations"][names.ENGINE_CACHE_KEY_ANNOTATION] == serving.engine_cache_key(
        spec, plan
    )


def test_hpa_targets_the_leader_worker_set_of_multi_node_replicas() -> None:
    spec = parse_spec(_with("autoscaling", {"minReplicas": 1, "maxReplicas": 2}))
    hpa = serving.build_hpa(OWNER, spec, "r1-qwen-7b", workload_kind="LeaderWorkerSet")
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "name": "r1-qwen-7b",
    }


def test_engine_build_keeps_its_log_tail_for_status() -> None:
    # The kubelet copies the log's last lines into the terminated state only with this policy;
    # diagnosis quotes that line when the build Job fails (docs/loop.md).
    spec = parse_spec(BASE)
    job = serving.build_engine_job(OWNER, spec, plan_deployment(spec))
    (build,) = job["spec"]["template"]["spec"]["containers"]
    assert build["terminationMessagePolicy"] == "FallbackToLogsOnError"
