"""The spec step (pure): after a spec change, a retry, or while the spec waits on the cluster,
check what the spec refers to, place it, record its revision and move the rollout towards it.

When something the pods need is missing, or nothing fits, the step stops there: whatever serves
keeps serving, and status says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from deepseek_operator import status as st
from deepseek_operator.api import names
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.api.types import ConditionType
from deepseek_operator.builders import serving
from deepseek_operator.diagnosis import Blocker, Reference, missing_references
from deepseek_operator.errors import SpecError
from deepseek_operator.planning.inventory import gpus_requested_per_node, replicas_that_fit
from deepseek_operator.planning.placement import Refusal
from deepseek_operator.planning.types import Plan
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.reconcile.capacity import claim_for
from deepseek_operator.reconcile.facts import Facts, MetricOp, Writes
from deepseek_operator.rollout import decisions
from deepseek_operator.rollout.decisions import Revisions

# Condition reasons that mean the spec waits on an object the user must create.
REFERENCE_REASONS = frozenset({"PVCNotFound", "SecretNotFound", "ConfigMapNotFound"})
REFERENCE_RECHECK_SECONDS = 5.0  # how often a missing Secret or PVC is looked for again


def retry_annotation(body: Mapping[str, Any]) -> str:
    """The value of the retry annotation ("" when unset)."""
    return str(((body.get("metadata") or {}).get("annotations") or {}).get(names.RETRY_ANNOTATION) or "")


def _conditions(body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (body.get("status") or {}).get("conditions") or []}


def waits_on_references(body: Mapping[str, Any]) -> bool:
    """Whether status says the spec waits on a missing PVC, Secret or ConfigMap."""
    return (_conditions(body).get("Progressing") or {}).get("reason") in REFERENCE_REASONS


def needs_spec_step(body: Mapping[str, Any]) -> bool:
    """Whether this pass runs the spec step: the spec changed (not observed yet), it could not be
    placed or waits on a missing object (try again), or the retry annotation is new."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
        return True
    if (_conditions(body).get("Placed") or {}).get("status") == "False" or waits_on_references(body):
        return True
    retry = retry_annotation(body)
    return bool(retry) and retry != Revisions.from_status(status.get("revisions")).retry


def references(spec: DeploymentSpec, namespace: str) -> list[Reference]:
    """The objects the serving and build pods mount, in the order they are checked."""
    refs = []
    if spec.model.source.pvc is not None:
        refs.append(
            Reference(
                "PersistentVolumeClaim",
                spec.model.source.pvc.claim_name,
                "spec.model.source.pvc.claimName",
                namespace,
            )
        )
    if spec.engine.cache_claim_name:
        refs.append(
            Reference(
                "PersistentVolumeClaim", spec.engine.cache_claim_name, "spec.engine.cacheClaimName", namespace
            )
        )
    if spec.model.source.credentials_secret:
        refs.append(
            Reference(
                "Secret",
                spec.model.source.credentials_secret,
                "spec.model.source.credentialsSecret",
                namespace,
            )
        )
    if spec.encryption is not None:
        refs.append(
            Reference("Secret", spec.encryption.key_secret, "spec.model.encryption.keySecret.name", namespace)
        )
    return refs


@dataclass
class SpecOutcome:
    """Where the spec step leaves the rollout: the revisions, the records (with a new one), why the
    spec's revision does not start, the Placed message, and the status fields it sets."""

    revisions: Revisions
    records: dict[str, Mapping[str, Any]]
    blocked: str = ""
    placed_message: str = ""
    status: dict[str, Any] = field(default_factory=dict)
    stop: bool = False  # nothing else to do in this pass (the spec cannot be served now)


def _serving(body: Mapping[str, Any]) -> bool:
    return int((body.get("status") or {}).get("readyReplicas") or 0) > 0


def stopped_status(
    body: Mapping[str, Any], why: st.Condition, ready_reason: str, pending_phase: str, now: str
) -> dict[str, Any]:
    """Status for a spec that cannot be served now: the condition ``why`` says why; what serves keeps
    serving (phase Degraded, Ready unchanged), else Ready is False (``ready_reason``) and the phase
    is ``pending_phase``."""
    current = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation")
    conds = [why]
    if not _serving(body):
        conds.append(st.Condition(ConditionType.READY, "False", ready_reason, why.message))
    return {
        "observedGeneration": generation,
        "phase": "Degraded" if _serving(body) else pending_phase,
        "conditions": st.merge_conditions(current.get("conditions") or [], conds, generation, now),
    }


def invalid_spec_writes(body: Mapping[str, Any], error: SpecError, now: str) -> Writes:
    """A spec the operator cannot serve: a condition and an event; children are left as they are."""
    w = Writes()
    why = st.Condition(ConditionType.PROGRESSING, "False", "InvalidSpec", str(error))
    _stop(
        body,
        w,
        stopped_status(body, why, "InvalidSpec", "Failed", now),
        ("Warning", "InvalidSpec", str(error)),
    )
    return w


def held_invalid_spec(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``Progressing=False InvalidSpec`` condition written for the spec as it is now, if any:
    the spec cannot be served until it changes, whatever the children do meanwhile."""
    cond = _conditions(body).get("Progressing") or {}
    generation = (body.get("metadata") or {}).get("generation")
    if cond.get("reason") == "InvalidSpec" and cond.get("observedGeneration") == generation:
        return cond
    return None


def keep_invalid_spec(fields: dict[str, Any], held: Mapping[str, Any], now: str) -> dict[str, Any]:
    """Status ``fields`` of a pass over the running revisions, with the spec still refused: the
    InvalidSpec condition stays, and the phase is Degraded while something serves, else Failed
    (as when it was first refused)."""
    out = dict(fields)
    serving = int(out.get("readyReplicas") or 0) > 0
    message = str(held.get("message") or "")
    wanted = [st.Condition(ConditionType.PROGRESSING, "False", "InvalidSpec", message)]
    if not serving:
        wanted.append(st.Condition(ConditionType.READY, "False", "InvalidSpec", message))
    conditions = list(out.get("conditions") or [])
    out["conditions"] = st.merge_conditions(conditions, wanted, held.get("observedGeneration"), now)
    out["phase"] = "Degraded" if serving else "Failed"
    return out


def _stop(body: Mapping[str, Any], w: Writes, status: dict[str, Any], event: tuple[str, str, str]) -> None:
    w.status = st.status_patch(body.get("status") or {}, status)
    if w.status:
        w.events.append(event)


def _missing(f: Facts, spec: DeploymentSpec) -> Blocker | None:
    namespace = str(f.body["metadata"]["namespace"])
    return missing_references(references(spec, namespace), f.references)


def _lent(f: Facts, spec: DeploymentSpec, plan: Plan, canary: str) -> int:
    """How many stable replicas a new canary must replace: 0 when the free GPUs hold it."""
    meta = f.body["metadata"]

    def own_canary(pod: Mapping[str, Any]) -> bool:
        pmeta = pod.get("metadata") or {}
        labels = pmeta.get("labels") or {}
        return (
            pmeta.get("namespace") == meta["namespace"]
            and labels.get(names.DEPLOYMENT_LABEL) == meta["name"]
            and labels.get(names.REVISION_LABEL) == canary
        )

    own = gpus_requested_per_node(
        dict(p) for (kind, _), p in f.children.items() if kind == "Pod" and not own_canary(p)
    )
    nodes = [replace(n, gpus_requested=n.gpus_requested + own.get(n.name, 0)) for n in f.inventory]
    lent = max(spec.rollout.canary_replicas - replicas_that_fit(nodes, plan), 0)
    return min(lent, spec.replicas) if lent and not spec.autoscaling else lent


def spec_step(f: Facts, spec: DeploymentSpec, now: str, w: Writes) -> SpecOutcome:
    """Run the spec step, adding its records and events to ``w``."""
    body = f.body
    meta = body["metadata"]
    revs = Revisions.from_status((body.get("status") or {}).get("revisions"))
    records = dict(rv.records_of(f.children))
    out = SpecOutcome(revs, records)
    if blocker := _missing(f, spec):
        why = st.Condition(ConditionType.PROGRESSING, "False", blocker.reason, blocker.message)
        _stop(
            body,
            w,
            stopped_status(body, why, blocker.reason, "Pending", now),
            ("Warning", blocker.reason, blocker.message),
        )
        w.requeue_after = REFERENCE_RECHECK_SECONDS
        out.stop = True
        return out
    plan = rv.plan_for(body, spec, list(f.inventory))
    if isinstance(plan, Refusal):
        why = st.Condition(ConditionType.PLACED, "False", plan.reason, plan.message)
        _stop(
            body,
            w,
            stopped_status(body, why, "NotPlaced", "Pending", now),
            ("Warning", "NotPlaced", plan.message),
        )
        w.waiting_for_capacity = True
        previous = _conditions(body).get("Placed") or {}
        if (previous.get("status"), previous.get("reason")) != ("False", plan.reason):  # a new refusal
            who = (str(meta["namespace"]), str(meta["name"]))
            w.metrics.append(MetricOp("placement_refusals", (*who, plan.reason)))
        out.stop = True
        return out
    revision = serving.revision_hash(spec, plan)
    rv.build_revision(body, spec, plan, revision)  # raises SpecError when it cannot be laid out
    if revision not in records:
        record = rv.build_record(body, revision, records, body.get("spec") or {}, plan)
        w.records.append(record)
        records[revision] = record
    step = decisions.plan_step(revs, revision, retry_annotation(body))
    new = step.revisions
    w.events.extend(step.events)
    if step.new_canary:
        lent = _lent(f, spec, plan, revision)
        new = replace(new, lent=lent)
        w.claim = claim_for(plan, revision, max(spec.rollout.canary_replicas - lent, 0))
        how = (
            f"no free GPUs for it: it replaces {lent} of the stable replicas"
            if lent
            else f"beside the {revs.stable} replicas"
        )
        w.events.append(("Normal", "CanaryStarted", f"canary {revision} started, {how}"))
    if revision not in (revs.stable, revs.canary) and not step.blocked:
        w.events.append(("Normal", "Applied", f"revision {revision}: {rv.plan_message(plan)}"))
        if new.stable == revision:  # a first deployment (or one without a canary) at full size
            w.claim = claim_for(
                plan, revision, spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas
            )
    out.revisions, out.records, out.blocked = new, records, step.blocked
    out.placed_message = rv.plan_message(plan, spec.engine.image)
    _, stable_plan = rv.load_revision(body, new.stable, records)
    out.status = {
        "observedGeneration": meta.get("generation"),
        "placement": rv.placement_status(stable_plan),
        "endpoints": rv.endpoints_status(body),
    }
    if new != revs:
        out.status["revisions"] = new.to_status()
    return out
