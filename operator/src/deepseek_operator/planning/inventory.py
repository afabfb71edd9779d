"""The GPU inventory: what each node offers, from its labels, allocatable resources and the pods on it.

Pure functions over node and pod dicts; :func:`deepseek_operator.kube.inventory.gather_inventory`
reads them from the API server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from deepseek_operator.api.constants import (
    GPU_COMPUTE_MAJOR_LABEL,
    GPU_COMPUTE_MINOR_LABEL,
    GPU_FAMILY_LABEL,
    GPU_MEMORY_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_REPLICAS_LABEL,
    GPU_RESOURCE,
    GPU_SHARING_LABEL,
)
from deepseek_operator.planning.types import NodeInfo, Plan

SHARED_SUFFIX = "-SHARED"
_BASIC_RESOURCES = {"cpu", "memory", "pods", "ephemeral-storage", GPU_RESOURCE}


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def gpus_requested_by_pod(pod: dict[str, Any]) -> int:
    """GPUs a pod holds on its node: the larger of its containers' sum and its biggest init container
    (as the scheduler counts), or 0 once the pod has finished."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    spec = pod.get("spec") or {}

    def gpus(container: dict[str, Any]) -> int:
        res = container.get("resources") or {}
        return _quantity(
            (res.get("requests") or {}).get(GPU_RESOURCE) or (res.get("limits") or {}).get(GPU_RESOURCE) or 0
        )

    main = sum(gpus(c) for c in spec.get("containers") or [])
    init = max((gpus(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def gpus_requested_per_node(
    pods: Iterable[dict[str, Any]], exclude_owner: tuple[str, str] | None = None
) -> dict[str, int]:
    """GPUs requested per node by the bound pods; the pods of ``exclude_owner`` (namespace, name) are
    left out (a deployment being re-planned may reuse the GPUs it holds)."""
    from deepseek_operator.api.names import DEPLOYMENT_LABEL  # noqa: PLC0415

    used: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            continue
        labels = (pod.get("metadata") or {}).get("labels") or {}
        namespace = (pod.get("metadata") or {}).get("namespace")
        if exclude_owner is not None and (namespace, labels.get(DEPLOYMENT_LABEL)) == exclude_owner:
            continue
        used[node] = used.get(node, 0) + gpus_requested_by_pod(pod)
    return used


def node_info(node: dict[str, Any], gpus_requested: int = 0) -> NodeInfo:
    """A node as placement sees it: GPU product (GFD), GPUs allocatable and requested, sharing, taints."""
    from deepseek_operator.planning.nccl import fabric_hints  # noqa: PLC0415

    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    labels: dict[str, str] = dict(meta.get("labels") or {})
    allocatable: dict[str, str] = dict(status.get("allocatable") or {})
    product = labels.get(GPU_PRODUCT_LABEL)
    sharing = labels.get(GPU_SHARING_LABEL, "none")
    if product and product.endswith(SHARED_SUFFIX):
        product = product.removesuffix(SHARED_SUFFIX)
        sharing = sharing if sharing != "none" else "time-slicing"
    replicas = _quantity(labels.get(GPU_REPLICAS_LABEL, "1")) or 1
    if replicas > 1 and sharing == "none":
        sharing = "time-slicing"
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    taints = tuple(
        (t.get("key", ""), t.get("value", ""), t.get("effect", "")) for t in spec.get("taints") or []
    )
    return NodeInfo(
        name=meta.get("name", ""),
        gpu_product=product,
        gpu_memory_mib=_quantity(labels.get(GPU_MEMORY_LABEL, "0")),
        gpus_allocatable=_quantity(allocatable.get(GPU_RESOURCE, "0")),
        gpus_requested=gpus_requested,
        compute_major=_quantity(labels.get(GPU_COMPUTE_MAJOR_LABEL, "0")),
        compute_minor=_quantity(labels.get(GPU_COMPUTE_MINOR_LABEL, "0")),
        family=labels.get(GPU_FAMILY_LABEL, ""),
        sharing=sharing,
        schedulable=ready and not spec.get("unschedulable", False),
        taints=taints,
        labels=tuple(sorted(labels.items())),
        fabric_hints=fabric_hints(labels, allocatable),
        extended_resources=tuple(
            sorted((k, str(v)) for k, v in allocatable.items() if k not in _BASIC_RESOURCES)
        ),
    )


def build_inventory(
    nodes: Iterable[dict[str, Any]],
    pods: Iterable[dict[str, Any]],
    exclude_owner: tuple[str, str] | None = None,
) -> list[NodeInfo]:
    """Every node with GPUs, with the GPUs the pods on it request (``exclude_owner``'s pods left out)."""
    used = gpus_requested_per_node(pods, exclude_owner)
    infos = [node_info(n, used.get((n.get("metadata") or {}).get("name", ""), 0)) for n in nodes]
    return sorted((i for i in infos if i.gpu_product and i.gpus_allocatable > 0), key=lambda i: i.name)


def replicas_that_fit(nodes: Iterable[NodeInfo], plan: Plan) -> int:
    """How many more replicas of ``plan`` the free GPUs of ``nodes`` hold (whole replicas only)."""
    allowed = set(plan.gpu_products) or ({plan.gpu_product} if plan.gpu_product else set())
    per_node = plan.gpus_per_replica // max(plan.nodes_per_replica, 1)
    if per_node <= 0:
        return 0
    slots = sum(
        n.gpus_free // per_node
        for n in nodes
        if n.schedulable and n.gpu_product and (not allowed or n.gpu_product in allowed)
    )
    return slots // max(plan.nodes_per_replica, 1)
