"""Simulated GPU node pools: the ``--gpus`` spec and the Node objects it yields.

A spec is a comma-separated list of pools ``POOL:NODESxGPUS``, for example
``h100:2x8,a100-80gb:1x4`` (two nodes with 8 H100s each, one node with 4 A100
80GB). Each node carries the labels NVIDIA GPU Feature Discovery puts on a real
GPU node, ``nvidia.com/gpu`` in capacity and allocatable, and the usual
``nvidia.com/gpu:NoSchedule`` taint, so that the real scheduler treats it like
one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from deepseek_operator.api.constants import (
    GPU_COMPUTE_MAJOR_LABEL,
    GPU_COMPUTE_MINOR_LABEL,
    GPU_COUNT_LABEL,
    GPU_FAMILY_LABEL,
    GPU_MEMORY_LABEL,
    GPU_PRESENT_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_REPLICAS_LABEL,
    GPU_RESOURCE,
    GPU_SHARING_LABEL,
    GPU_TAINT_KEY,
)
from deepseek_operator.errors import SpecError

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
POOL_LABEL = "sim.deepseek.ai/pool"


@dataclass(frozen=True)
class GPUProduct:
    """What GPU Feature Discovery reports for one GPU model."""

    product: str  # nvidia.com/gpu.product
    memory_mib: int  # nvidia.com/gpu.memory
    family: str  # nvidia.com/gpu.family
    compute_major: int
    compute_minor: int
    # CPU cores and host memory of the typical server that carries 8 of them;
    # scaled down for smaller nodes so that requests look plausible.
    host_cpus_per_gpu: int = 16
    host_memory_gib_per_gpu: int = 128


# Product names and memory sizes as GFD labels them on real nodes (product
# names have spaces replaced by dashes; memory in MiB as nvidia-smi reports).
GPU_PRODUCTS: dict[str, GPUProduct] = {
    "h100": GPUProduct("NVIDIA-H100-80GB-HBM3", 81559, "hopper", 9, 0),
    "h100-pcie": GPUProduct("NVIDIA-H100-PCIe", 81559, "hopper", 9, 0),
    "h200": GPUProduct("NVIDIA-H200", 143771, "hopper", 9, 0),
    "b200": GPUProduct("NVIDIA-B200", 183359, "blackwell", 10, 0),
    "a100-80gb": GPUProduct("NVIDIA-A100-SXM4-80GB", 81920, "ampere", 8, 0),
    "a100-40gb": GPUProduct("NVIDIA-A100-SXM4-40GB", 40960, "ampere", 8, 0),
    "a100": GPUProduct("NVIDIA-A100-SXM4-40GB", 40960, "ampere", 8, 0),
    "l40s": GPUProduct("NVIDIA-L40S", 46068, "ada-lovelace", 8, 9, 8, 64),
    "l4": GPUProduct("NVIDIA-L4", 23034, "ada-lovelace", 8, 9, 8, 32),
    "a10g": GPUProduct("NVIDIA-A10G", 23028, "ampere", 8, 6, 8, 32),
    "rtx4090": GPUProduct("NVIDIA-GeForce-RTX-4090", 24564, "ada-lovelace", 8, 9, 8, 32),
}

_POOL_RE = re.compile(r"^(?P<pool>[a-z0-9][a-z0-9-]*):(?P<nodes>\d+)x(?P<gpus>\d+)$")
MAX_NODES_PER_POOL = 64
MAX_GPUS_PER_NODE = 16


@dataclass(frozen=True)
class GPUPool:
    """One pool of identical simulated GPU nodes."""

    name: str
    product: GPUProduct
    nodes: int
    gpus_per_node: int


def parse_gpu_spec(spec: str) -> list[GPUPool]:
    """Parse ``POOL:NODESxGPUS[,...]`` into pools.

    Raises :class:`SpecError` naming the bad part and the accepted forms.
    An empty string yields no pools (a cluster without GPU nodes).
    """
    pools: list[GPUPool] = []
    seen: set[str] = set()
    for raw in (part.strip() for part in spec.split(",")):
        if not raw:
            continue
        m = _POOL_RE.match(raw.lower())
        if m is None:
            raise SpecError(
                f"--gpus: cannot read {raw!r}; write POOL:NODESxGPUS, e.g. 'h100:2x8,a100-80gb:1x4'"
            )
        name = m["pool"]
        if name not in GPU_PRODUCTS:
            known = ", ".join(sorted(GPU_PRODUCTS))
            raise SpecError(f"--gpus: unknown GPU pool {name!r}; known pools: {known}")
        if name in seen:
            raise SpecError(f"--gpus: pool {name!r} is given twice; give each pool once")
        seen.add(name)
        nodes, gpus = int(m["nodes"]), int(m["gpus"])
        if not 1 <= nodes <= MAX_NODES_PER_POOL:
            raise SpecError(f"--gpus: {raw!r} asks for {nodes} nodes; use 1 to {MAX_NODES_PER_POOL}")
        if not 1 <= gpus <= MAX_GPUS_PER_NODE:
            raise SpecError(f"--gpus: {raw!r} asks for {gpus} GPUs per node; use 1 to {MAX_GPUS_PER_NODE}")
        pools.append(GPUPool(name, GPU_PRODUCTS[name], nodes, gpus))
    return pools


def node_name(pool: GPUPool, index: int) -> str:
    """The name of the ``index``-th node of ``pool``."""
    return f"gpu-{pool.name}-{index}"


def _node(
    name: str, labels: dict[str, str], capacity: dict[str, str], taints: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **labels,
            },
        },
        "spec": {"taints": taints} if taints else {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kernelVersion": "",
                "osImage": "",
                "containerRuntimeVersion": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def gpu_node_manifest(pool: GPUPool, index: int) -> dict[str, Any]:
    """The Node object for one simulated GPU node, as GFD and the device plugin would leave it."""
    p = pool.product
    labels = {
        POOL_LABEL: pool.name,
        GPU_PRESENT_LABEL: "true",
        GPU_PRODUCT_LABEL: p.product,
        GPU_MEMORY_LABEL: str(p.memory_mib),
        GPU_COUNT_LABEL: str(pool.gpus_per_node),
        GPU_FAMILY_LABEL: p.family,
        GPU_COMPUTE_MAJOR_LABEL: str(p.compute_major),
        GPU_COMPUTE_MINOR_LABEL: str(p.compute_minor),
        GPU_REPLICAS_LABEL: "1",
        GPU_SHARING_LABEL: "none",
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/cuda.driver.major": "570",
        "nvidia.com/cuda.runtime.major": "12",
    }
    capacity = {
        "cpu": str(p.host_cpus_per_gpu * pool.gpus_per_node),
        "memory": f"{p.host_memory_gib_per_gpu * pool.gpus_per_node}Gi",
        "ephemeral-storage": "2Ti",
        "pods": "110",
        GPU_RESOURCE: str(pool.gpus_per_node),
    }
    taints = [{"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}]
    return _node(node_name(pool, index), labels, capacity, taints)


def cpu_node_manifest(index: int) -> dict[str, Any]:
    """A plain (GPU-less, untainted) node for workloads that need no GPU."""
    capacity = {"cpu": "32", "memory": "128Gi", "ephemeral-storage": "1Ti", "pods": "110"}
    return _node(f"cpu-{index}", {POOL_LABEL: "cpu"}, capacity, [])


def node_manifests(pools: list[GPUPool], cpu_nodes: int = 0) -> list[dict[str, Any]]:
    """Every Node object of a simulated cluster: the GPU pools, then ``cpu_nodes`` plain nodes."""
    nodes = [gpu_node_manifest(pool, i) for pool in pools for i in range(pool.nodes)]
    nodes += [cpu_node_manifest(i) for i in range(cpu_nodes)]
    return nodes


SIM_VOLUMES = 64
SIM_VOLUME_SIZE = "10Ti"


def volume_manifests(
    count: int = SIM_VOLUMES, host_dir: str = "/tmp/dso-sim-volumes"
) -> list[dict[str, Any]]:
    """Pre-provisioned PersistentVolumes without a storage class.

    The simulated cluster has no storage provisioner; a PVC that names no class
    (or the empty class) binds to one of these, as on a cluster with static volumes.
    """
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"sim-pv-{i:03d}", "labels": {POOL_LABEL: "storage"}},
            "spec": {
                "capacity": {"storage": SIM_VOLUME_SIZE},
                "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "volumeMode": "Filesystem",
                "hostPath": {"path": f"{host_dir}/pv-{i:03d}", "type": "DirectoryOrCreate"},
            },
        }
        for i in range(count)
    ]
