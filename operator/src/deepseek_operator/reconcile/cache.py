"""The watch caches the loop gathers from: slim copies of the resources, their children, the pods
and the GPU nodes, indexed by owner, and which resources a change concerns.

The slim projections keep only what gathering, deciding and status read, so that thousands of
pods fit in a few MiB. A change that does not alter the projection (a node heartbeat, a
managedFields shuffle) wakes nobody.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.constants import (
    GROUP,
    KIND,
    LABEL_MANAGED_BY,
    LWS_API_VERSION,
    LWS_KIND,
    MANAGED_BY,
)
from deepseek_operator.diagnosis import slim_pod
from deepseek_operator.kube.watch import Informer, Source, Store
from deepseek_operator.planning.inventory import gpus_requested_by_pod
from deepseek_operator.reconcile.capacity import Capacity

Owner = tuple[str, str]  # (namespace, name) of a DeepSeekDeployment
ChildKey = tuple[str, str]  # (kind, name)

_MANAGED = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
# The kinds the operator owns, by kind: (apiVersion, REST collection across namespaces, optional).
OWNED: dict[str, tuple[str, str, bool]] = {
    "Deployment": ("apps/v1", "/apis/apps/v1/deployments", False),
    LWS_KIND: (LWS_API_VERSION, f"/apis/{LWS_API_VERSION}/leaderworkersets", True),
    "Job": ("batch/v1", "/apis/batch/v1/jobs", False),
    "ConfigMap": ("v1", "/api/v1/configmaps", False),
    "Service": ("v1", "/api/v1/services", False),
    "PodDisruptionBudget": ("policy/v1", "/apis/policy/v1/poddisruptionbudgets", False),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "/apis/autoscaling/v2/horizontalpodautoscalers", False),
    "ControllerRevision": ("apps/v1", "/apis/apps/v1/controllerrevisions", False),
}
_OUR_ANNOTATIONS = f"{GROUP}/"
PVC = "PersistentVolumeClaim"
API_SERVICE = "APIService"
# The aggregated API the HPA reads Pods metrics from (prometheus-adapter registers it); watched by
# name only, so that status can say whether that hop of the autoscaling chain is there.
METRICS_API_SERVICE = "v1beta1.custom.metrics.k8s.io"


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out = {k: meta[k] for k in ("name", "namespace", "resourceVersion", "generation", "uid") if k in meta}
    out["labels"] = dict(meta.get("labels") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(_OUR_ANNOTATIONS)}
    if annotations:
        out["annotations"] = annotations
    if meta.get("deletionTimestamp"):
        out["deletionTimestamp"] = meta["deletionTimestamp"]
    return out


def slim_owned(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A child the operator owns, as gathering reads it: metadata, the replica count and the status
    (ControllerRevisions whole: they are the revision records)."""
    if obj.get("kind") == "ControllerRevision" or ("data" in obj and "revision" in obj):
        out = {k: obj[k] for k in ("apiVersion", "kind", "revision", "data") if k in obj}
        out["metadata"] = _meta(obj)
        return out
    out = {"metadata": _meta(obj)}
    spec = obj.get("spec") or {}
    if "replicas" in spec:
        out["spec"] = {"replicas": spec["replicas"]}
    if obj.get("status"):
        out["status"] = obj["status"]
    return out


def slim_node(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A node as the GPU inventory reads it (no heartbeat times: they change every few seconds)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "resourceVersion": meta.get("resourceVersion"),
            "labels": dict(meta.get("labels") or {}),
        },
        "spec": {"taints": spec.get("taints") or [], "unschedulable": bool(spec.get("unschedulable"))},
        "status": {
            "allocatable": dict(status.get("allocatable") or {}),
            "capacity": dict(status.get("capacity") or {}),
            "conditions": [
                {"type": c.get("type"), "status": c.get("status")} for c in status.get("conditions") or []
            ],
        },
    }


def slim_claim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A PersistentVolumeClaim as the reference check reads it: its name and phase."""
    meta = obj.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "namespace", "resourceVersion") if k in meta},
        "status": {"phase": (obj.get("status") or {}).get("phase")},
    }


def slim_api_service(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An APIService as status reads it: its name and conditions."""
    meta = obj.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "resourceVersion") if k in meta},
        "status": {
            "conditions": [
                {k: c.get(k) for k in ("type", "status", "reason", "message")}
                for c in (obj.get("status") or {}).get("conditions") or []
            ]
        },
    }


def _without_version(obj: Mapping[str, Any] | None) -> Any:
    if obj is None:
        return None
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def owner_of(obj: Mapping[str, Any]) -> Owner | None:
    """The DeepSeekDeployment a child belongs to, from its labels."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner = labels.get(names.DEPLOYMENT_LABEL)
    if not owner or labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        return None
    return str(meta.get("namespace") or ""), str(owner)


class Cache:
    """Every informer the loop needs, an index of children by owner, and the DeepSeekDeployments
    (fed by kopf's watch of the custom resource)."""

    def __init__(
        self,
        on_owner: Callable[[Owner], None],
        on_capacity: Callable[[], None],
        on_references: Callable[[], None] = lambda: None,
        namespaces: tuple[str, ...] = (),
        on_metrics_api: Callable[[], None] = lambda: None,
    ) -> None:
        """``namespaces``: watch only these (a namespace-scoped install's Roles grant no more);
        nodes are cluster-scoped and always watched whole."""
        self._on_owner = on_owner
        self._on_capacity = on_capacity
        self._on_references = on_references
        self._on_metrics_api = on_metrics_api
        self._lock = threading.Lock()
        self._index: dict[Owner, set[ChildKey]] = {}
        self.capacity = Capacity()  # the GPU inventory, fed by the pod and node informers
        self.resources = Store(KIND)
        self.informers: dict[str, Informer] = {}
        for kind, (_, path, optional) in OWNED.items():
            source = Source(kind, path, _MANAGED, optional, namespaces)
            self.informers[kind] = Informer(source, slim_owned, self._changed)
        # Every pod (of the watched namespaces): the inventory counts other workloads' GPUs too.
        pods = Source("Pod", "/api/v1/pods", namespaces=namespaces)
        self.informers["Pod"] = Informer(pods, slim_pod, self._changed)
        self.informers["Node"] = Informer(Source("Node", "/api/v1/nodes"), slim_node, self._changed)
        # Every PVC (names and phase only): the spec step checks the model and engine-cache claims
        # here, and a claim created later wakes the resources that wait for it.
        self.informers[PVC] = Informer(
            Source(PVC, "/api/v1/persistentvolumeclaims", namespaces=namespaces), slim_claim, self._changed
        )
        if not namespaces:
            # APIServices are cluster-scoped: a namespace-scoped install's Roles cannot grant
            # them, and its status relies on the HPA's own conditions for that hop.
            source = Source(
                API_SERVICE,
                "/apis/apiregistration.k8s.io/v1/apiservices",
                optional=True,
                field_selector=f"metadata.name={METRICS_API_SERVICE}",
            )
            self.informers[API_SERVICE] = Informer(source, slim_api_service, self._changed)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start every informer."""
        for informer in self.informers.values():
            informer.start()

    def wait_synced(self, timeout: float) -> list[str]:
        """Wait until every informer has listed once; returns the kinds still not listed."""
        late = []
        for kind, informer in self.informers.items():
            if not informer.synced.wait(timeout):
                late.append(kind)
        return late

    def stop(self) -> None:
        """Stop every informer."""
        for informer in self.informers.values():
            informer.stop()
        for informer in self.informers.values():
            informer.join(1.0)

    # --- changes ---------------------------------------------------------------------------

    def _changed(self, kind: str, event: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if kind in (API_SERVICE, PVC):
            self._wake_for(kind, event, obj, old)
            return
        if kind == "Pod":
            self.capacity.pod_changed(event, obj)
        elif kind == "Node":
            self.capacity.node_changed(event, obj)
        owner = owner_of(obj) if kind != "Node" else None
        if owner is not None:
            key = (kind, str(obj["metadata"]["name"]))
            with self._lock:
                if event == "DELETED":
                    self._index.get(owner, set()).discard(key)
                else:
                    self._index.setdefault(owner, set()).add(key)
        if event != "DELETED" and _without_version(obj) == _without_version(old):
            return  # only the resourceVersion moved (or nothing we read)
        if owner is not None:
            self._on_owner(owner)
        if kind == "Node" or (kind == "Pod" and _frees_or_takes_gpus(event, obj, old)):
            self._on_capacity()

    def _wake_for(self, kind: str, event: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Kinds no resource owns: whoever depends on them looks again."""
        if kind == API_SERVICE:
            if event == "DELETED" or _without_version(obj) != _without_version(old):
                self._on_metrics_api()  # whoever autoscales says so in its status
        elif event != "DELETED" and old is None:
            self._on_references()  # a new claim: whoever waits for one looks again

    def resource_changed(self, event: str, body: dict[str, Any]) -> bool:
        """Record a DeepSeekDeployment from kopf's watch; True when it changed (the operator's own
        status write, already stored from its answer, is not a change)."""
        meta = body.get("metadata") or {}
        if event == "DELETED":
            self.resources.remove(str(meta.get("namespace")), str(meta.get("name")))
            return False
        return self.resources.put(body)[0]

    def remember(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Store what a write answered (newer than the watch may have delivered yet)."""
        if kind == KIND:
            self.resources.put(dict(obj))
            return
        informer = self.informers.get(kind)
        if informer is None:
            return
        slim = slim_pod(obj) if kind == "Pod" else slim_owned(obj)
        if informer.store.put(slim)[0] and (owner := owner_of(slim)) is not None:
            with self._lock:
                self._index.setdefault(owner, set()).add((kind, str(slim["metadata"]["name"])))

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Drop an object the operator deleted."""
        informer = self.informers.get(kind)
        if informer is not None:
            informer.store.remove(namespace, name)

    # --- reads -------------------------------------------------------------------------------

    def has(self, kind: str, namespace: str, name: str) -> bool:
        """Whether a watched object of ``kind`` is in the cache (False for kinds not watched)."""
        informer = self.informers.get(kind)
        return informer is not None and informer.store.get(namespace, name) is not None

    def metrics_api(self) -> dict[str, Any] | None:
        """The custom metrics APIService as watched: its slim object, ``{}`` when there is none,
        None when it cannot be known (not watched, not listed yet, or the API not served)."""
        informer = self.informers.get(API_SERVICE)
        if informer is None or not informer.synced.is_set() or not informer.available:
            return None
        return informer.store.get("", METRICS_API_SERVICE) or {}

    def resource(self, owner: Owner) -> dict[str, Any] | None:
        """The DeepSeekDeployment as last seen."""
        return self.resources.get(*owner)

    def children(self, owner: Owner) -> dict[ChildKey, dict[str, Any]]:
        """Every stored child of ``owner`` (pods included, under kind "Pod")."""
        with self._lock:
            keys = list(self._index.get(owner, ()))
        out: dict[ChildKey, dict[str, Any]] = {}
        for kind, name in keys:
            informer = self.informers.get(kind)
            obj = informer.store.get(owner[0], name) if informer else None
            if obj is not None:
                out[(kind, name)] = obj
        return out


def _gpus_held(pod: Mapping[str, Any] | None) -> int:
    if pod is None or not (pod.get("spec") or {}).get("nodeName"):
        return 0
    return gpus_requested_by_pod(dict(pod))


def _frees_or_takes_gpus(event: str, obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether a pod event changes how many GPUs are held on some node."""
    if event == "DELETED":
        return _gpus_held(old if old is not None else obj) > 0
    return _gpus_held(old) != _gpus_held(obj)
