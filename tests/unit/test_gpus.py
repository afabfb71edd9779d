"""The --gpus pool spec and the simulated GPU Node objects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepseek_operator.api.constants import GPU_RESOURCE
from deepseek_operator.errors import SpecError
from deepseek_operator.sim.gpus import (
    GPU_PRODUCTS,
    KWOK_ANNOTATION,
    node_manifests,
    parse_gpu_spec,
)


def test_parses_two_pools() -> None:
    pools = parse_gpu_spec("h100:2x8,a100-80gb:1x4")
    assert [(p.name, p.nodes, p.gpus_per_node) for p in pools] == [("h100", 2, 8), ("a100-80gb", 1, 4)]
    assert pools[0].product.product == "NVIDIA-H100-80GB-HBM3"
    assert pools[1].product.memory_mib == 81920


def test_empty_spec_means_no_gpu_nodes() -> None:
    assert parse_gpu_spec("") == []


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("h100", "POOL:NODESxGPUS"),
        ("h100:2", "POOL:NODESxGPUS"),
        ("h100:2x", "POOL:NODESxGPUS"),
        ("h100:x8", "POOL:NODESxGPUS"),
        ("tpu:1x8", "unknown GPU pool 'tpu'"),
        ("h100:0x8", "use 1 to"),
        ("h100:1x0", "use 1 to"),
        ("h100:1x17", "use 1 to 16"),
        ("h100:1x8,h100:1x4", "given twice"),
        ("h100:-1x8", "POOL:NODESxGPUS"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, fragment: str) -> None:
    with pytest.raises(SpecError, match="--gpus") as info:
        parse_gpu_spec(spec)
    assert fragment in str(info.value)


def test_node_carries_gfd_labels_capacity_and_taint() -> None:
    (pool,) = parse_gpu_spec("h200:1x8")
    (node,) = node_manifests([pool])
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H200"
    assert labels["nvidia.com/gpu.memory"] == "143771"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/gpu.family"] == "hopper"
    assert labels["nvidia.com/gpu.compute.major"] == "9"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "none"
    assert node["status"]["capacity"][GPU_RESOURCE] == "8"
    assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert node["metadata"]["annotations"][KWOK_ANNOTATION] == "fake"


def test_cpu_nodes_have_no_gpu_and_no_taint() -> None:
    nodes = node_manifests([], cpu_nodes=2)
    assert [n["metadata"]["name"] for n in nodes] == ["cpu-0", "cpu-1"]
    for n in nodes:
        assert GPU_RESOURCE not in n["status"]["capacity"]
        assert "taints" not in n["spec"]


@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(GPU_PRODUCTS)), st.integers(1, 64), st.integers(1, 16)),
        min_size=1,
        max_size=5,
        unique_by=lambda t: t[0],
    )
)
def test_any_valid_spec_yields_one_node_per_requested_node(pools: list[tuple[str, int, int]]) -> None:
    spec = ",".join(f"{name}:{n}x{g}" for name, n, g in pools)
    parsed = parse_gpu_spec(spec)
    nodes = node_manifests(parsed)
    assert len(nodes) == sum(n for _, n, _ in pools)
    assert len({n["metadata"]["name"] for n in nodes}) == len(nodes)
    total = sum(int(n["status"]["allocatable"][GPU_RESOURCE]) for n in nodes)
    assert total == sum(n * g for _, n, g in pools)
