"""A pure model of what writes do, for table tests of ``decide`` (no cluster, no client).

:class:`World` holds one DeepSeekDeployment and its children as dicts. :meth:`World.facts`
gathers from it as the loop gathers from its caches, and :meth:`World.apply` carries out a
decision's writes the way the API server would (server-side apply replaces what the
operator owns; status is merged). ``settle`` then plays the controllers and the kubelet:
Jobs complete, workloads report their replicas ready, pods exist for them.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepseek_operator.api import names
from deepseek_operator.api.constants import KIND
from deepseek_operator.reconcile.cache import slim_node, slim_owned
from deepseek_operator.reconcile.capacity import Capacity
from deepseek_operator.reconcile.decide import decide
from deepseek_operator.reconcile.facts import AnalysisRun, Facts, Writes
from deepseek_operator.rollout.decisions import Measurement, Revisions
from deepseek_operator.sim.gpus import node_manifests, parse_gpu_spec
from deepseek_operator.sim.tools import repo_root

T0 = dt.datetime(2026, 12, 1, 9, 0, 0, tzinfo=dt.UTC)


def sample(name: str = "r1-distill-qwen-7b") -> dict[str, Any]:
    """A sample DeepSeekDeployment as the API server would hand it out (namespace, uid, generation)."""
    path = repo_root() / "manifests" / "samples" / f"{name}.yaml"
    (doc,) = [d for d in yaml.safe_load_all(Path(path).read_text()) if d and d["kind"] == KIND]
    doc["metadata"].update(namespace="llm", uid="00000000-0000-0000-0000-000000000001", generation=1)
    doc["metadata"]["resourceVersion"] = "1"
    return dict(doc)


def gpu_nodes(spec: str = "h100:2x8,a100-80gb:1x4") -> list[dict[str, Any]]:
    """Ready simulated GPU nodes, slim as the cache keeps them."""
    nodes = node_manifests(parse_gpu_spec(spec), 0)
    for n in nodes:
        n["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return [slim_node(n) for n in nodes]


def _pod_labels(workload: Mapping[str, Any]) -> dict[str, str]:
    """The labels of the (leader) pods a workload creates: its pod template's."""
    spec = workload["spec"]
    template = spec["template"] if "template" in spec else spec["leaderWorkerTemplate"]["leaderTemplate"]
    return dict(template["metadata"]["labels"])


@dataclass
class World:
    """One resource, its children and the nodes; ``now`` moves only when a test moves it."""

    body: dict[str, Any]
    nodes: list[dict[str, Any]] = field(default_factory=gpu_nodes)
    children: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    references: dict[tuple[str, str], bool] = field(default_factory=dict)
    other_pods: list[dict[str, Any]] = field(default_factory=list)  # other workloads' GPU pods
    now: dt.datetime = T0
    events: list[tuple[str, str, str]] = field(default_factory=list)
    ran_at: dt.datetime | None = None
    version: int = 1
    metrics_api: dict[str, Any] | None = None  # the custom metrics APIService as watched
    # Workload name -> the labels its pods are created with (the children are kept slim, as the
    # operator's cache keeps them: without their templates).
    pod_labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def facts(self, analysis: AnalysisRun | None = None) -> Facts:
        """The facts a pass would gather now."""
        # The inventory as the loop keeps it: the informers feed the nodes and every pod.
        capacity = Capacity()
        for node in self.nodes:
            capacity.node_changed("ADDED", node)
        for pod in [*self.other_pods, *[c for (k, _), c in self.children.items() if k == "Pod"]]:
            capacity.pod_changed("ADDED", pod)
        owner = (str(self.body["metadata"]["namespace"]), str(self.body["metadata"]["name"]))
        return Facts(
            body=copy.deepcopy(self.body),
            now=self.now,
            children=copy.deepcopy(self.children),
            inventory=capacity.inventory(owner, 0.0),
            references=dict(self.references),
            analysis=analysis,
            analysis_ran_at=self.ran_at,
            metrics_api=self.metrics_api,
        )

    def decide(self, analysis: AnalysisRun | None = None) -> Writes:
        """One pass of decide on the world as it is."""
        return decide(self.facts(analysis))

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    def apply(self, w: Writes, upto: str = "all") -> None:
        """Carry out ``w`` as the writer would; ``upto="status"`` stops after the status write (an
        operator killed between a decision and its application)."""
        for obj in [*w.records]:
            self._store(obj)
        self.events.extend(w.events)
        if w.status:
            status = self.body.setdefault("status", {})
            status.update(copy.deepcopy(w.status))
            self.body["metadata"]["resourceVersion"] = self._bump()
        if upto == "status":
            return
        for obj in w.apply:
            self._store(obj)
        for s in w.scale:
            child = self.children[(s.kind, s.name)]
            child.setdefault("spec", {})["replicas"] = s.replicas
        for d in w.delete:
            self.children.pop((d.kind, d.name), None)
        for r in w.relabel:
            self._relabel(r.pod, r.labels)
        if w.analysis_ran_at is not None:
            self.ran_at = w.analysis_ran_at
        elif "analysis" in w.status:
            self.ran_at = None

    def _relabel(self, pod: str, changes: Mapping[str, str | None]) -> None:
        labels = self.children[("Pod", pod)]["metadata"]["labels"]
        for k, v in changes.items():
            if v is None:
                labels.pop(k, None)
            else:
                labels[k] = v

    def _store(self, obj: dict[str, Any]) -> None:
        full = copy.deepcopy(obj)
        full["metadata"]["resourceVersion"] = self._bump()
        old = self.children.get((obj["kind"], obj["metadata"]["name"]))
        slim = slim_owned(full)
        if obj["kind"] in ("Deployment", "LeaderWorkerSet"):
            self.pod_labels[obj["metadata"]["name"]] = _pod_labels(full)
        if old is not None and "spec" in old and "spec" not in slim:
            slim["spec"] = old["spec"]  # the count belongs to the scale manager
        if old is not None and "status" in old:
            slim["status"] = old["status"]
        self.children[(obj["kind"], obj["metadata"]["name"])] = slim

    def settle(self, ready: bool = True) -> None:
        """What the controllers and the kubelet do: Jobs complete; each workload gets its pods
        (Running, Ready when ``ready``) and reports them."""
        for (kind, name), child in list(self.children.items()):
            if kind == "Job":
                child["status"] = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
            if kind in ("Deployment", "LeaderWorkerSet"):
                self._settle_workload(name, child, ready)

    def _settle_workload(self, name: str, child: dict[str, Any], ready: bool) -> None:
        labels = child["metadata"]["labels"]
        revision = labels.get(names.REVISION_LABEL, "")
        want = int((child.get("spec") or {}).get("replicas", 1))
        pods = sorted(
            n
            for (k, n), p in self.children.items()
            if k == "Pod" and p["metadata"]["labels"].get(names.REVISION_LABEL) == revision
        )
        for extra in pods[want:]:
            del self.children[("Pod", extra)]
        for i in range(len(pods), want):
            pod_name = f"{name}-pod-{i}"
            pod_labels = dict(self.pod_labels[name])  # as its controller creates it
            self.children[("Pod", pod_name)] = {
                "metadata": {"name": pod_name, "namespace": "llm", "labels": pod_labels},
                "spec": {
                    "nodeName": "gpu-h100-0",
                    "containers": [{"name": "triton", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
                },
                "status": {"phase": "Running"},
            }
        for (k, _), pod in self.children.items():
            if k == "Pod" and pod["metadata"]["labels"].get(names.REVISION_LABEL) == revision:
                pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
        n = want if ready else 0
        child["status"] = {
            "replicas": want,
            "readyReplicas": n,
            "updatedReplicas": want,
            "observedGeneration": child["metadata"].get("generation", 0),
        }

    def converge(self, passes: int = 6) -> Writes:
        """Decide, apply and settle until a pass writes nothing; returns the last pass's writes."""
        w = Writes()
        for _ in range(passes):
            w = self.decide()
            if w.empty():
                return w
            self.apply(w)
            self.settle()
        raise AssertionError(f"no fixpoint after {passes} passes; last writes: {w}")

    def change_spec(self, **sections: Any) -> None:
        """A user's edit of the spec: a new generation."""
        for path, value in sections.items():
            target = self.body["spec"]
            keys = path.split("__")
            for k in keys[:-1]:
                target = target.setdefault(k, {})
            target[keys[-1]] = value
        self.body["metadata"]["generation"] += 1
        self.body["metadata"]["resourceVersion"] = self._bump()


# --- what the table tests and the Argo CD cases do to a World --------------------------------

GOOD = Measurement(p99_latency_ms=120.0, latency_source="golden", error_rate=0.0, requests=4, accuracy=1.0)
SLOW = Measurement(p99_latency_ms=900.0, latency_source="golden", error_rate=0.0, requests=4, accuracy=1.0)


def revs(w: World) -> Revisions:
    """The revisions ``w``'s status names."""
    return Revisions.from_status((w.body.get("status") or {}).get("revisions"))


def analyse(w: World, m: Measurement, times: int = 1, advance: float = 31.0) -> Writes:
    """``times`` analyses of the revision under test, ``advance`` seconds apart; the last writes."""
    last = Writes()
    for _ in range(times):
        w.now += dt.timedelta(seconds=advance)
        r = revs(w)
        subject, role = (r.canary, "canary") if r.canary else (r.stable, "stable")
        last = w.decide(AnalysisRun(subject, role, m, None))  # type: ignore[arg-type]
        w.apply(last)
        w.settle()
    return last
