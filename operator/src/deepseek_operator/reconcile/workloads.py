"""The workload step (pure): make the cluster run what ``status.revisions`` says.

Each live revision's objects at its size, the shared objects on the stable revision, the pods
of the revisions that take traffic labelled for the Service, stale workloads and old records
removed. Every object is compared with the watch cache by its applied hash: what is already
there is not written again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.constants import LABEL_COMPONENT, LWS_API_VERSION, LWS_KIND
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.api.types import Role
from deepseek_operator.planning.types import Plan
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.reconcile.facts import ChildKey, Delete, Relabel, Scale, Writes
from deepseek_operator.rollout import decisions
from deepseek_operator.rollout import revisions as rec
from deepseek_operator.rollout.decisions import Revisions

Children = Mapping[ChildKey, Mapping[str, Any]]
API_DEFAULT_REPLICAS = 1  # what the API server sets on a Deployment applied without spec.replicas
# (body, revision, records) -> (spec, plan, objects): pure, and memoised by the loop.
RevisionBuilder = Callable[
    [Mapping[str, Any], str, rv.Records], tuple[DeploymentSpec, Plan, list[dict[str, Any]]]
]
# The per-revision kinds removed once their revision is no longer live.
_STALE_KINDS = {"Deployment": "apps/v1", LWS_KIND: LWS_API_VERSION, "ConfigMap": "v1"}


def revision_objects(
    body: Mapping[str, Any], revision: str, records: rv.Records
) -> tuple[DeploymentSpec, Plan, list[dict[str, Any]]]:
    """A recorded revision's spec, plan and objects (the default :data:`RevisionBuilder`)."""
    spec, plan = rv.load_revision(body, revision, records)
    return spec, plan, rv.build_revision(body, spec, plan, revision)


def _differs(obj: Mapping[str, Any], children: Children) -> bool:
    current = children.get((str(obj["kind"]), str(obj["metadata"]["name"])))
    if current is None:
        return True
    if obj["kind"] == "Job":
        return False  # a Job's pod template is immutable; its name carries what it builds
    return rv.applied_hash(current) != rv.applied_hash(obj)


def _replicas(children: Children, kind: str, name: str) -> int | None:
    current = children.get((kind, name))
    if current is None:
        return None
    return int(((current.get("spec") or {}).get("replicas")) or 0)


@dataclass(frozen=True)
class Live:
    """The plans of the revisions that run (None: not running)."""

    stable: Plan | None
    canary: Plan | None


def handover(
    body: Mapping[str, Any],
    spec: DeploymentSpec,
    old: Revisions,
    children: Children,
    stable_plan: Plan | None,
) -> int | None:
    """Under an HPA, the replica count a newly stable revision starts with: what the HPA had reached
    on the old stable revision (plus any replicas the canary had replaced)."""
    if spec.autoscaling is None or not old.stable or stable_plan is None:
        return None
    _, kind = rv.workload_kind(stable_plan)
    reached = _replicas(children, kind, names.workload_name(str(body["metadata"]["name"]), old.stable))
    if reached is None:
        return spec.autoscaling.min_replicas
    return max(reached + old.lent, spec.autoscaling.min_replicas)


def workload_step(
    body: Mapping[str, Any],
    spec: DeploymentSpec,
    revs: Revisions,
    records: rv.Records,
    children: Children,
    w: Writes,
    build: RevisionBuilder = revision_objects,
    handover_to: int | None = None,
) -> Live:
    """Add to ``w`` what makes the cluster match ``revs``; returns the live revisions' plans."""
    owner = str(body["metadata"]["name"])
    wanted = decisions.plan_workloads(
        revs,
        None if spec.autoscaling else spec.replicas,
        spec.rollout.canary_replicas,
        spec.rollout.standby_replicas,
    )
    live: set[str] = set()
    plans: dict[str, Plan] = {}
    for want in wanted:
        _, plan, objects = build(body, want.revision, records)
        live.add(want.revision)
        plans[want.role] = plan
        w.apply.extend(o for o in objects if _differs(o, children))
        api_version, kind = rv.workload_kind(plan)
        name = names.workload_name(owner, want.revision)
        count = (
            want.replicas
            if want.replicas is not None
            else (handover_to if want.role == Role.STABLE else None)
        )
        current = _replicas(children, kind, name)
        if current is None and count == API_DEFAULT_REPLICAS and kind == "Deployment":
            continue  # created without a count, the API server gives it this one
        if count is not None and current != count:
            w.scale.append(Scale(api_version, kind, name, count))
    stable_plan = plans.get(Role.STABLE)
    if stable_plan is not None:
        shared = rv.build_shared(body, spec, revs.stable, stable_plan, revs.lent)
        w.apply.extend(o for o in shared if _differs(o, children))
        hpa = ("HorizontalPodAutoscaler", names.serving_name(owner))
        if spec.autoscaling is None and hpa in children:
            w.delete.append(Delete("autoscaling/v2", *hpa))
    _remove_stale(children, live, revs, w)
    _label_traffic(children, revs, w)
    return Live(stable_plan, plans.get(Role.CANARY))


def _remove_stale(children: Children, live: set[str], revs: Revisions, w: Writes) -> None:
    for (kind, name), obj in sorted(children.items()):
        meta = obj.get("metadata") or {}
        revision = (meta.get("labels") or {}).get(names.REVISION_LABEL)
        if kind in _STALE_KINDS and revision and revision not in live and not meta.get("deletionTimestamp"):
            w.delete.append(Delete(_STALE_KINDS[kind], kind, name))
    # The operator's records only (not the ControllerRevisions of an LWS controller's StatefulSets).
    records = [dict(o) for _, o in sorted(rv.records_of(children).items())]
    for old in rec.prunable(records, live | set(revs.failed[-3:])):
        w.delete.append(Delete(rec.API_VERSION, rec.KIND, str(old["metadata"]["name"])))


def _label_traffic(children: Children, revs: Revisions, w: Writes) -> None:
    serving_revs = {r for r in (revs.stable, revs.canary) if r}
    for (kind, name), pod in sorted(children.items()):
        if kind != "Pod":
            continue
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(LABEL_COMPONENT) != names.COMPONENT_SERVING or meta.get("deletionTimestamp"):
            continue
        want = names.TRAFFIC_ON if labels.get(names.REVISION_LABEL) in serving_revs else None
        if labels.get(names.TRAFFIC_LABEL) != want:
            w.relabel.append(Relabel(name, {names.TRAFFIC_LABEL: want}))
