"""The GPU inventory, kept current by the node and pod informers, and the GPUs promised to
revisions placed a moment ago whose pods are not bound yet.

Placement used to rebuild the inventory from every node and every GPU pod on each spec step
(a few milliseconds each, a thousand times when a thousand resources arrive at once), and
every resource placed in the same second saw the same free GPUs: more engines were pinned to
the preferred product than it had GPUs, and their pods stayed Pending. Here each node is read
once per change, the GPUs held per node are counted as pods bind and finish, and a *claim*
stands for the pods a placement asked for until the scheduler has bound them: the next
placement sees those GPUs as taken.

No clock, no client: callers pass ``now`` (a monotonic second count) and feed the changes.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.constants import LABEL_MANAGED_BY, MANAGED_BY
from deepseek_operator.planning.inventory import gpus_requested_by_pod, node_info
from deepseek_operator.planning.types import NodeInfo, Plan

Owner = tuple[str, str]  # (namespace, name) of a DeepSeekDeployment
CLAIM_SECONDS = 120.0  # a claim whose pods are still not bound by then no longer counts


@dataclass(frozen=True)
class Claim:
    """GPUs a placement asked for: ``pods`` pods of ``revision``, each asking ``gpus_per_pod``
    GPUs on a node of one of ``products`` (preferred first; empty: any GPU node)."""

    revision: str
    products: tuple[str, ...]
    gpus_per_pod: int
    pods: int


def claim_for(plan: Plan, revision: str, replicas: int) -> Claim:
    """The claim of ``replicas`` replicas of ``plan``'s revision."""
    nodes = max(plan.nodes_per_replica, 1)
    products = plan.gpu_products or ((plan.gpu_product,) if plan.gpu_product else ())
    return Claim(revision, tuple(products), plan.gpus_per_replica // nodes, replicas * nodes)


@dataclass(frozen=True)
class _Held:
    node: str
    gpus: int
    owner: Owner | None
    revision: str


def _held(pod: Mapping[str, Any]) -> _Held | None:
    node = (pod.get("spec") or {}).get("nodeName")
    gpus = gpus_requested_by_pod(dict(pod)) if node else 0
    if not gpus:
        return None
    labels = (pod.get("metadata") or {}).get("labels") or {}
    owner = None
    if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(names.DEPLOYMENT_LABEL):
        owner = (str((pod.get("metadata") or {}).get("namespace") or ""), str(labels[names.DEPLOYMENT_LABEL]))
    return _Held(str(node), gpus, owner, str(labels.get(names.REVISION_LABEL) or ""))


class Capacity:
    """Nodes as placement sees them, the GPUs bound pods hold, and the open claims."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeInfo] = {}  # GPU nodes, gpus_requested 0
        self._pods: dict[tuple[str, str], _Held] = {}
        self._used: dict[str, int] = {}  # node -> GPUs held by bound pods
        self._by_owner: dict[Owner, dict[str, int]] = {}  # owner -> node -> GPUs
        self._by_revision: dict[tuple[Owner, str], int] = {}  # (owner, revision) -> GPUs held
        self._claims: dict[Owner, tuple[Claim, float]] = {}

    # --- changes -----------------------------------------------------------------------------

    def node_changed(self, event: str, node: Mapping[str, Any]) -> None:
        """A node was added, changed or deleted."""
        name = str((node.get("metadata") or {}).get("name") or "")
        info = None if event == "DELETED" else node_info(dict(node))
        with self._lock:
            if info is not None and info.gpu_product and info.gpus_allocatable > 0:
                self._nodes[name] = info
            else:
                self._nodes.pop(name, None)

    def pod_changed(self, event: str, pod: Mapping[str, Any]) -> None:
        """A pod was added, changed or deleted: count the GPUs it holds on its node now."""
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        now = None if event == "DELETED" else _held(pod)
        with self._lock:
            before = self._pods.pop(key, None)
            if before is not None:
                self._count(before, -1)
            if now is not None:
                self._pods[key] = now
                self._count(now, 1)

    def _count(self, held: _Held, sign: int) -> None:
        self._used[held.node] = self._used.get(held.node, 0) + sign * held.gpus
        if held.owner is None:
            return
        per_node = self._by_owner.setdefault(held.owner, {})
        per_node[held.node] = per_node.get(held.node, 0) + sign * held.gpus
        key = (held.owner, held.revision)
        self._by_revision[key] = self._by_revision.get(key, 0) + sign * held.gpus

    def claim(self, owner: Owner, claim: Claim, now: float) -> None:
        """``owner``'s latest placement (it replaces the one before)."""
        with self._lock:
            self._claims[owner] = (claim, now)

    def forget(self, owner: Owner) -> None:
        """``owner`` is gone: its claim goes with it."""
        with self._lock:
            self._claims.pop(owner, None)

    # --- reads --------------------------------------------------------------------------------

    def inventory(self, exclude: Owner | None, now: float) -> list[NodeInfo]:
        """Every GPU node with the GPUs taken on it: by bound pods (``exclude``'s own left out:
        a resource being placed again may reuse what it holds) and by other owners' open claims."""
        with self._lock:
            used = dict(self._used)
            for node, gpus in (self._by_owner.get(exclude, {}) if exclude else {}).items():
                used[node] = used.get(node, 0) - gpus
            outstanding = self._outstanding(exclude, now)
            nodes = dict(self._nodes)
        for (products, per_pod), pods in outstanding.items():
            _promise(nodes, used, products, per_pod, pods)
        return [
            replace(info, gpus_requested=max(used.get(name, 0), 0)) for name, info in sorted(nodes.items())
        ]

    def _outstanding(self, exclude: Owner | None, now: float) -> dict[tuple[tuple[str, ...], int], int]:
        """Pods claimed and not bound yet, by (products, GPUs per pod); expired or fully bound
        claims are dropped on the way."""
        out: dict[tuple[tuple[str, ...], int], int] = {}
        for owner, (claim, made_at) in list(self._claims.items()):
            missing = claim.pods * claim.gpus_per_pod - self._by_revision.get((owner, claim.revision), 0)
            if now - made_at > CLAIM_SECONDS or missing <= 0 or claim.gpus_per_pod <= 0:
                del self._claims[owner]
                continue
            if owner == exclude:
                continue
            key = (claim.products, claim.gpus_per_pod)
            out[key] = out.get(key, 0) + -(-missing // claim.gpus_per_pod)
        return out

    def claims(self) -> int:
        """Open claims (for tests and metrics)."""
        with self._lock:
            return len(self._claims)


def _promise(
    nodes: Mapping[str, NodeInfo], used: dict[str, int], products: Iterable[str], per_pod: int, pods: int
) -> None:
    """Count ``pods`` pods of ``per_pod`` GPUs as taken, as the scheduler would place them: on the
    first product that has room (preferred first), each on the node with the most free GPUs."""
    order: list[str | None] = [*products] or [None]
    for product in order:
        heap = [
            (-(info.gpus_allocatable - used.get(name, 0)), name)
            for name, info in nodes.items()
            if info.schedulable and (product is None or info.gpu_product == product)
        ]
        heapq.heapify(heap)
        while pods > 0 and heap:
            free, name = heapq.heappop(heap)
            if -free < per_pod:
                break  # the emptiest node of this product cannot hold one more
            used[name] = used.get(name, 0) + per_pod
            pods -= 1
            heapq.heappush(heap, (free + per_pod, name))
        if pods <= 0:
            return
