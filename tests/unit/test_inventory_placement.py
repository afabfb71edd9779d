"""The GPU inventory (nodes and pods -> NodeInfo) and placement (spec + arch + nodes -> Plan | Refusal)."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator.api.spec import parse_spec
from deepseek_operator.builders import serving
from deepseek_operator.errors import SpecError
from deepseek_operator.planning import catalog
from deepseek_operator.planning import gpus as gpu_types
from deepseek_operator.planning.inventory import build_inventory, gpus_requested_by_pod, node_info
from deepseek_operator.planning.placement import (
    Refusal,
    catalog_nodes,
    expert_parallel_layout,
    plan_placement,
    runtime_path,
    sizing_request,
)
from deepseek_operator.planning.sizing import size_options
from deepseek_operator.planning.types import NodeInfo, Plan
from deepseek_operator.sim.gpus import node_manifests, parse_gpu_spec


def _pod(
    node: str, gpus: int, phase: str = "Running", owner: tuple[str, str] | None = None, init_gpus: int = 0
) -> dict[str, Any]:
    labels = {"serving.deepseek.ai/deployment": owner[1]} if owner else {}
    return {
        "metadata": {"namespace": owner[0] if owner else "other", "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
            "initContainers": [{"resources": {"requests": {"nvidia.com/gpu": str(init_gpus)}}}]
            if init_gpus
            else [],
        },
        "status": {"phase": phase},
    }


def _ready(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for n in nodes:
        n["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return nodes


def _cluster(spec: str, pods: list[dict[str, Any]] | None = None, cpu: int = 1) -> list[NodeInfo]:
    return build_inventory(_ready(node_manifests(parse_gpu_spec(spec), cpu)), pods or [])


def test_pod_gpu_requests_count_like_the_scheduler() -> None:
    assert gpus_requested_by_pod(_pod("n", 2)) == 2
    assert gpus_requested_by_pod(_pod("n", 2, init_gpus=4)) == 4
    assert gpus_requested_by_pod(_pod("n", 2, phase="Succeeded")) == 0


def test_inventory_counts_free_gpus_and_skips_cpu_nodes() -> None:
    nodes = _cluster(
        "h100:2x8,a100-80gb:1x4",
        [_pod("gpu-h100-0", 3), _pod("gpu-h100-0", 2), _pod("gpu-a100-80gb-0", 4, phase="Failed")],
    )
    by_name = {n.name: n for n in nodes}
    assert set(by_name) == {"gpu-h100-0", "gpu-h100-1", "gpu-a100-80gb-0"}
    assert by_name["gpu-h100-0"].gpus_free == 3
    assert by_name["gpu-h100-1"].gpus_free == 8
    assert by_name["gpu-a100-80gb-0"].gpus_free == 4
    assert by_name["gpu-h100-0"].gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert by_name["gpu-h100-0"].compute_major == 9


def test_inventory_leaves_out_the_deployments_own_pods() -> None:
    pods = [_pod("gpu-h100-0", 8, owner=("llm", "r1")), _pod("gpu-h100-1", 8, owner=("other-ns", "r1"))]
    by_name = {
        n.name: n
        for n in build_inventory(
            _ready(node_manifests(parse_gpu_spec("h100:2x8"))), pods, exclude_owner=("llm", "r1")
        )
    }
    assert by_name["gpu-h100-0"].gpus_free == 8  # its own GPUs may be reused
    assert by_name["gpu-h100-1"].gpus_free == 0  # a namesake in another namespace is someone else


@pytest.mark.parametrize(
    ("labels", "sharing"),
    [
        ({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-SHARED"}, "time-slicing"),
        ({"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.sharing-strategy": "mps"}, "mps"),
        ({"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.replicas": "4"}, "time-slicing"),
        ({"nvidia.com/gpu.product": "NVIDIA-L4"}, "none"),
    ],
)
def test_shared_gpus_are_recognised(labels: dict[str, str], sharing: str) -> None:
    node = {
        "metadata": {"name": "n", "labels": labels},
        "status": {
            "allocatable": {"nvidia.com/gpu": "4"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    info = node_info(node)
    assert info.sharing == sharing
    assert info.gpu_product is not None and not info.gpu_product.endswith("-SHARED")


def _spec(model: str, **extra: Any) -> Any:
    raw: dict[str, Any] = {"model": {"id": model, "source": {"pvc": {"claimName": "store"}}}}
    for key, value in extra.items():
        raw[key] = value
    return parse_spec(raw)


def _place(spec: Any, nodes: list[NodeInfo]) -> Plan | Refusal:
    arch = catalog.arch_from_spec(spec.model)
    return plan_placement(spec, arch, nodes)


def test_first_allowed_product_with_capacity_wins() -> None:
    nodes = _cluster("h100:1x8,a100-80gb:1x8")
    spec = _spec(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        gpu={"products": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]},
    )
    plan = _place(spec, nodes)
    assert isinstance(plan, Plan)
    assert plan.gpu_product == "NVIDIA-A100-SXM4-80GB"
    assert plan.gpus_per_replica == 1


def test_falls_back_to_the_next_product_when_the_first_is_full() -> None:
    nodes = _cluster("h100:1x8,a100-80gb:1x8", [_pod("gpu-a100-80gb-0", 8)])
    spec = _spec(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        gpu={"products": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]},
    )
    plan = _place(spec, nodes)
    assert isinstance(plan, Plan) and plan.gpu_product == "NVIDIA-H100-80GB-HBM3"


def test_no_capacity_is_refused_with_free_gpus_per_node() -> None:
    nodes = _cluster("h200:1x8", [_pod("gpu-h200-0", 6)])
    refusal = _place(_spec("deepseek-ai/DeepSeek-R1", gpu={"products": ["NVIDIA-H200"]}), nodes)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "NoCapacity"
    assert "8 x NVIDIA-H200" in refusal.message and "gpu-h200-0 2/8 free" in refusal.message


def test_too_large_for_every_gpu_names_the_best_gpu() -> None:
    refusal = _place(
        _spec(
            "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
            engine={"precision": "bf16"},
            gpu={"products": ["NVIDIA-L40S"], "tensorParallel": 1},
        ),
        _cluster("l40s:1x4"),
    )
    assert isinstance(refusal, Refusal)
    assert "NVIDIA-L40S" in refusal.message and "GiB" in refusal.message


def test_r1_fp8_on_h100_spans_two_nodes_and_on_h200_one() -> None:
    h100 = _place(
        _spec(
            "deepseek-ai/DeepSeek-R1",
            engine={"precision": "fp8"},
            gpu={"products": ["NVIDIA-H100-80GB-HBM3"]},
        ),
        _cluster("h100:2x8"),
    )
    assert isinstance(h100, Plan)
    # TensorRT-LLM's DeepSeek-V3 recipe across two nodes (examples/models/core/deepseek_v3/README.md,
    # multi-node: -n 16 ... --tp 16 --ep 16): TP and EP over all 16 GPUs, no pipeline.
    got = (h100.gpus_per_replica, h100.tensor_parallel, h100.pipeline_parallel, h100.nodes_per_replica)
    assert got == (16, 16, 1, 2)
    assert h100.expert_parallel == 16 and h100.max_batch_size > 0
    assert h100.estimated_gpu_memory_gib <= 80
    h200 = _place(
        _spec("deepseek-ai/DeepSeek-R1", engine={"precision": "fp8"}, gpu={"products": ["NVIDIA-H200"]}),
        _cluster("h200:1x8"),
    )
    assert isinstance(h200, Plan)
    assert (h200.gpus_per_replica, h200.nodes_per_replica) == (8, 1)


def test_multi_node_needs_two_nodes_with_free_gpus() -> None:
    nodes = _cluster("h100:2x8", [_pod("gpu-h100-1", 1)])
    refusal = _place(
        _spec(
            "deepseek-ai/DeepSeek-R1",
            engine={"precision": "fp8"},
            gpu={"products": ["NVIDIA-H100-80GB-HBM3"]},
        ),
        nodes,
    )
    assert isinstance(refusal, Refusal) and "2 nodes with 8 free GPUs each" in refusal.message


def test_tensor_parallel_engines_never_go_on_shared_gpus() -> None:
    shared = [
        NodeInfo(
            name="s",
            gpu_product="NVIDIA-H100-80GB-HBM3",
            gpu_memory_mib=81559,
            gpus_allocatable=8,
            gpus_requested=0,
            compute_major=9,
            family="hopper",
            sharing="time-slicing",
        )
    ]
    plan = _place(_spec("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", engine={"precision": "bf16"}), shared)
    assert isinstance(plan, Refusal)
    small = _place(_spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"), shared)
    assert isinstance(small, Plan) and small.gpus_per_replica == 1


def test_a_running_deployment_keeps_its_product() -> None:
    nodes = _cluster("h100:1x8,h200:1x8")
    spec = _spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    arch = catalog.arch_from_spec(spec.model)
    first = plan_placement(spec, arch, nodes)
    assert isinstance(first, Plan)
    other = ({"NVIDIA-H100-80GB-HBM3", "NVIDIA-H200"} - {first.gpu_product}).pop()
    again = plan_placement(spec, arch, nodes, previous_product=other)
    assert isinstance(again, Plan) and again.gpu_product == other


def test_pytorch_path_may_use_every_product_that_fits_in_preference_order() -> None:
    spec = _spec(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        engine={"runtime": "pytorch"},
        gpu={"products": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]},
    )
    plan = _place(spec, _cluster("h100:1x8,a100-80gb:1x8"))
    assert isinstance(plan, Plan) and plan.runtime == "pytorch"
    assert plan.gpu_products == ("NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3")
    affinity = serving.gpu_affinity(plan)
    assert affinity is not None
    preferred = affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [p["preference"]["matchExpressions"][0]["values"][0] for p in preferred] == list(plan.gpu_products)
    assert preferred[0]["weight"] > preferred[1]["weight"]


def test_catalog_only_planning_covers_every_catalog_gpu() -> None:
    nodes = catalog_nodes()
    assert len({n.gpu_product for n in nodes}) == 6
    plan = _place(
        _spec(
            "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
            engine={"precision": "bf16"},
            gpu={"products": ["NVIDIA-H200"]},
        ),
        nodes,
    )
    assert isinstance(plan, Plan) and plan.tensor_parallel == 2


SIX_GPUS = (
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-H200",
    "NVIDIA-A100-SXM4-40GB",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-L40S",
    "NVIDIA-GeForce-RTX-4090",
)


@pytest.mark.parametrize("gpu", SIX_GPUS)
@pytest.mark.parametrize("model", sorted(catalog.CATALOG))
def test_placement_table_every_model_on_every_gpu(model: str, gpu: str) -> None:
    """On two empty 8-GPU nodes of one product, placement takes the first fitting sizing option
    (native precision first) among those the image's runtime path can load, that two nodes can
    hold, and refuses with the right reason otherwise (the model or the GPU generation the image
    cannot serve first)."""
    spec = _spec(model, gpu={"products": [gpu]})
    arch = catalog.arch_from_spec(spec.model)
    result = plan_placement(spec, arch, catalog_nodes((gpu,), nodes_per_product=2))
    try:
        path = runtime_path(spec, arch)
    except SpecError:
        assert isinstance(result, Refusal) and result.reason == "UnsupportedModel"
        return
    t = gpu_types.gpu_type(gpu)
    if path.support is not None and not path.support.runs_on(t.compute_major, t.compute_minor):
        assert isinstance(result, Refusal) and result.reason == "UnsupportedGPU", result
        return
    options = size_options(arch, t, sizing_request(spec, path.precisions), gpus_per_node=8)
    fitting = [o for o in options if o.fits]
    holdable = [o for o in fitting if o.nodes_per_replica <= 2]
    if holdable:
        want = expert_parallel_layout(spec, arch, holdable[0], path.runtime)
        assert isinstance(result, Plan), result
        got = (result.precision, result.tensor_parallel, result.pipeline_parallel, result.nodes_per_replica)
        assert got == (want.precision, want.tensor_parallel, want.pipeline_parallel, want.nodes_per_replica)
        assert result.gpu_product == gpu
        # TP stays in a node, except TP x EP over a multi-node MoE replica (the DeepSeek-V3 recipe)
        assert result.tensor_parallel <= 8 or result.expert_parallel == result.tensor_parallel
        assert result.tensor_parallel & (result.tensor_parallel - 1) == 0
        assert result.estimated_gpu_memory_gib <= gpu_types.gpu_type(gpu).memory_gib
        if fitting[0].nodes_per_replica <= 2:
            assert result.precision == fitting[0].precision  # no quantization when the native one fits
    else:
        assert isinstance(result, Refusal)
        assert result.reason == ("NoCapacity" if fitting else "NoGPUFits")
