"""Reading the GPU inventory from the API server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deepseek_operator.kube.client import api_client, request
from deepseek_operator.planning.inventory import build_inventory
from deepseek_operator.planning.types import NodeInfo


def _list(path: str, query: list[tuple[str, str]] | None = None, api: Any = None) -> list[dict[str, Any]]:
    data = request(api or api_client(), "GET", path, query=query)
    return list((data or {}).get("items", []))


def gather_inventory(
    exclude_owner: tuple[str, str] | None = None,
    api: Any = None,
    skip_pod: Callable[[dict[str, Any]], bool] | None = None,
) -> list[NodeInfo]:
    """GPU nodes with their free GPUs, counting the GPUs of every unfinished pod bound to them
    (except ``exclude_owner``'s pods and those ``skip_pod`` picks out)."""
    nodes = _list("/api/v1/nodes", api=api)
    pods = _list("/api/v1/pods", [("fieldSelector", "status.phase!=Succeeded,status.phase!=Failed")], api=api)
    if skip_pod is not None:
        pods = [p for p in pods if not skip_pod(p)]
    return build_inventory(nodes, pods, exclude_owner)
