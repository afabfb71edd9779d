"""GPU-aware placement on the simulated cluster (pools h100:2x8, a100-80gb:1x4, h200:1x8):
the scheduler puts pods where the plan says, a spec without capacity is refused with numbers
and creates nothing, and R1 on H100 becomes a LeaderWorkerSet across two nodes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from kubernetes import client

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, KIND, PLURAL, VERSION
from deepseek_operator.kube import client as kube
from tests.support.plugin import wait_for


def _apply(api: Any, namespace: str, doc: dict[str, Any]) -> None:
    """Server-side apply as a user would (`kubectl apply --server-side`), under the user's field manager."""
    kube.server_side_apply(api, doc, "user", namespace)


def _dsd(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}


def _status(api: Any, namespace: str, name: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return dict(obj.get("status") or {})


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def _free_gpus(api: Any) -> dict[str, int]:
    from deepseek_operator.kube.inventory import gather_inventory  # noqa: PLC0415

    out: dict[str, int] = {}
    for n in gather_inventory(api=api):
        out[str(n.gpu_product)] = out.get(str(n.gpu_product), 0) + n.gpus_free
    return out


def _wait_free(api: Any, wanted: dict[str, int], timeout: float = 120) -> None:
    """Until the GPUs a test places on are free: an earlier test's namespace may still be going,
    its pods still holding GPUs."""
    wait_for(
        lambda: all(_free_gpus(api).get(p, 0) >= n for p, n in wanted.items()),
        timeout=timeout,
        what=f"free GPUs {wanted}",
    )


def _blocker(namespace: str, gpus: int, product: str) -> dict[str, Any]:
    """A pod that holds ``gpus`` GPUs of ``product`` (another team's workload)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "other-team"},
        "spec": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"nvidia.com/gpu.product": product},
            "containers": [
                {"name": "main", "image": "busybox", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
            ],
        },
    }


def test_spec_without_free_capacity_is_refused_with_numbers_and_creates_nothing(
    kube_api: Any, namespace: str, operator: Any
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _blocker(namespace, 8, "NVIDIA-H200"))
    wait_for(
        lambda: core.read_namespaced_pod("other-team", namespace).status.phase == "Running",
        what="the blocking pod to run",
    )
    spec = {
        "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "source": {"uri": "hf://deepseek-ai/x"}},
        "engine": {"runtime": "pytorch"},
        "gpu": {"products": ["NVIDIA-H200"]},
    }
    _apply(kube_api, namespace, _dsd("needs-h200", spec))

    status = wait_for(
        lambda: (s := _status(kube_api, namespace, "needs-h200")).get("phase") == "Pending" and s,
        what="phase Pending",
    )
    placed = _condition(status, "Placed")
    assert placed["status"] == "False" and placed["reason"] == "NoCapacity"
    assert "gpu-h200-0 0/8 free" in placed["message"], placed["message"]
    assert "NVIDIA-H200" in placed["message"] and "GiB per GPU" in placed["message"]
    time.sleep(3)
    assert client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items == []
    assert [p.metadata.name for p in core.list_namespaced_pod(namespace).items] == ["other-team"]
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=needs-h200").items
    assert any(e.type == "Warning" and e.reason == "NotPlaced" for e in events)

    # Capacity comes back: the periodic check places it without any change to the spec.
    core.delete_namespaced_pod("other-team", namespace, grace_period_seconds=0)
    status = wait_for(
        lambda: (s := _status(kube_api, namespace, "needs-h200")).get("phase") == "Ready" and s,
        timeout=60,
        what="placed once the GPUs are free",
    )
    assert _condition(status, "Placed")["status"] == "True"
    assert status["placement"]["gpuProduct"] == "NVIDIA-H200"


def test_model_too_large_for_every_allowed_gpu_says_so(kube_api: Any, namespace: str, operator: Any) -> None:
    spec = {
        "model": {"id": "deepseek-ai/DeepSeek-R1", "source": {"uri": "hf://deepseek-ai/DeepSeek-R1"}},
        "engine": {"precision": "fp8"},
        "gpu": {"products": ["NVIDIA-A100-SXM4-80GB"]},
    }
    _apply(kube_api, namespace, _dsd("r1-on-a100", spec))
    status = wait_for(
        lambda: (s := _status(kube_api, namespace, "r1-on-a100")).get("phase") == "Pending" and s,
        what="phase Pending",
    )
    placed = _condition(status, "Placed")
    # TensorRT-LLM's DeepSeek-V3 README: Hopper and Blackwell only, "Ampere ... is not supported".
    assert placed["status"] == "False" and placed["reason"] == "UnsupportedGPU", placed
    assert "Hopper or newer" in placed["message"] and "NVIDIA-A100-SXM4-80GB" in placed["message"]
    assert "spec.gpu.products" in placed["message"]
    assert client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items == []


def test_r1_fp8_on_h100_is_a_leader_worker_set_across_two_nodes(
    kube_api: Any, namespace: str, operator: Any
) -> None:
    _wait_free(kube_api, {"NVIDIA-H100-80GB-HBM3": 16})
    spec = {
        "model": {"id": "deepseek-ai/DeepSeek-R1", "source": {"uri": "hf://deepseek-ai/DeepSeek-R1"}},
        "engine": {"precision": "fp8"},
        "gpu": {"products": ["NVIDIA-H100-80GB-HBM3"]},
    }
    _apply(kube_api, namespace, _dsd("r1-h100", spec))
    status = wait_for(
        lambda: (s := _status(kube_api, namespace, "r1-h100")).get("placement") and s, what="a placement"
    )
    p = status["placement"]
    # TP x EP over both nodes, as TensorRT-LLM's DeepSeek-V3 recipe runs two nodes (--tp 16 --ep 16).
    assert (p["gpusPerReplica"], p["tensorParallel"], p["pipelineParallel"], p["nodesPerReplica"]) == (
        16,
        16,
        1,
        2,
    )
    lws_name = names.workload_name("r1-h100", status["revisions"]["stable"])
    lws = kube.request(
        kube_api,
        "GET",
        f"/apis/leaderworkerset.x-k8s.io/v1/namespaces/{namespace}/leaderworkersets/{lws_name}",
    )
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    for role in ("leaderTemplate", "workerTemplate"):
        (container,) = template[role]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        terms = template[role]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["NVIDIA-H100-80GB-HBM3"]
    assert "mpirun" in template["leaderTemplate"]["spec"]["containers"][0]["command"][2]
    assert lws["metadata"]["ownerReferences"][0]["name"] == "r1-h100"
    assert client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items == []
    svc = client.CoreV1Api(kube_api).read_namespaced_service("r1-h100", namespace)
    assert svc.spec.selector["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    assert status["placement"]["fabric"] in ("infiniband", "roce", "ethernet", "efa")
    assert lws["metadata"]["labels"][names.REVISION_LABEL] == status["revisions"]["stable"]


def test_plan_cli_against_the_live_cluster(sim_cluster: Any, namespace: str, kube_api: Any) -> None:
    _wait_free(kube_api, {"NVIDIA-H100-80GB-HBM3": 16, "NVIDIA-H200": 8})
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, _blocker(namespace, 8, "NVIDIA-H200"))
    wait_for(
        lambda: core.read_namespaced_pod("other-team", namespace).status.phase == "Running",
        what="the blocking pod to run",
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepseek_operator",
            "plan",
            "deepseek-ai/DeepSeek-R1",
            "--kubeconfig",
            str(sim_cluster.kubeconfig),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout)
    rows = {r["gpu"]: r for r in report["options"]}
    assert set(rows) == {"NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-H200"}
    assert rows["NVIDIA-H200"]["freeGpus"] == {"gpu-h200-0": 0}
    placement = report["placement"]
    # The H200 node is full, so R1 goes across the two H100 nodes.
    assert placement["placed"] is True
    assert (placement["gpuProduct"], placement["nodesPerReplica"]) == ("NVIDIA-H100-80GB-HBM3", 2)


def test_resources_applied_at_once_are_not_promised_the_same_gpus(
    kube_api: Any, namespace: str, model_store: str, operator: Any
) -> None:
    """Ten engine-path resources of two one-GPU replicas, applied together, allowed on H100 (16
    GPUs, preferred) and H200 (8): an engine is pinned to the product it is built for, so had
    each placement seen the same free GPUs, all ten would pick the H100s and four pods would
    never be scheduled. Each placement counts the GPUs the ones before it took."""
    h100, h200 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"
    _wait_free(kube_api, {h100: 16, h200: 8})
    spec = {
        "model": {
            "id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            "source": {"pvc": {"claimName": model_store, "path": "deepseek/r1-qwen-7b"}},
        },
        "engine": {"runtime": "tensorrt-llm", "precision": "bf16"},
        "gpu": {"products": [h100, h200], "perReplica": 1},
        "replicas": 2,
    }
    names_ = [f"m{i}" for i in range(10)]
    for name in names_:
        _apply(kube_api, namespace, _dsd(name, spec))

    def all_ready() -> list[dict[str, Any]] | None:
        statuses = [_status(kube_api, namespace, n) for n in names_]
        return statuses if all(s.get("phase") == "Ready" for s in statuses) else None

    deadline = time.monotonic() + 120
    while (statuses := all_ready()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if statuses is None:
        seen = {
            n: (
                s.get("phase"),
                (s.get("placement") or {}).get("gpuProduct"),
                _condition(s, "Ready").get("message"),
            )
            for n in names_
            if (s := _status(kube_api, namespace, n)).get("phase") != "Ready"
        }
        pytest.fail(f"not Ready after 120 s: {json.dumps(seen, indent=1)}")
    products = [s["placement"]["gpuProduct"] for s in statuses]
    # Never more than a product holds (the build Jobs' pods hold GPUs for a moment too, so a
    # placement may already turn to the H200 before the H100s are all promised).
    assert products.count(h100) <= 8 and products.count(h200) <= 4 and len(products) == 10
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
    assert not [p.metadata.name for p in pods if p.status.phase == "Pending"]
