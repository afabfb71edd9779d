"""decide: the gathered facts in, the writes to make out. Pure: no client, no clock, no network.

The same function serves every pass, whatever woke it (a spec change, a child's change, an
analysis falling due, the operator starting): it is level-triggered. The steps, in order:

1. parse the spec (an invalid one is a condition and an event; nothing else moves);
2. the spec step, when the spec changed, waits on the cluster, or is retried: references,
   placement, the revision record, the rollout step (:mod:`.spec_step`);
   otherwise the analysis step, when gathering ran a due analysis (:mod:`.analysis_step`);
3. the workload step: the objects, counts and traffic labels ``status.revisions`` asks for
   (:mod:`.workloads`);
4. the status step: phase and conditions from the children, naming what blocks (:mod:`.report`);
5. when to come back: the next analysis.

A decision that moves revisions is in the status written before any workload moves, so an
operator stopped in between finds it and finishes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deepseek_operator import status as st
from deepseek_operator.api import names
from deepseek_operator.api.clock import format_time
from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.api.types import ConditionType, DecisionAction
from deepseek_operator.builders import autoscaling
from deepseek_operator.errors import SpecError
from deepseek_operator.reconcile import analysis_step as an
from deepseek_operator.reconcile import autoscale, report
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.reconcile import spec_step as sp
from deepseek_operator.reconcile.facts import Facts, Writes
from deepseek_operator.reconcile.workloads import (
    Live,
    RevisionBuilder,
    handover,
    revision_objects,
    workload_step,
)
from deepseek_operator.rollout import decisions
from deepseek_operator.rollout.decisions import Revisions


@dataclass
class _Pass:
    """What the steps of one pass hand on to the next."""

    revisions: Revisions
    records: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)  # fields set by the spec or analysis step
    conditions: list[dict[str, Any]] = field(default_factory=list)
    blocked: str = ""
    placed_message: str = ""
    handover: int | None = None
    spec_step: bool = False


def _placed_message(f: Facts) -> str:
    for cond in (f.body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Placed":
            return str(cond.get("message") or "")
    return ""


def _analysis(f: Facts, spec: DeploymentSpec, p: _Pass, w: Writes, now: str) -> None:
    if f.analysis is None or not an.analysable(p.revisions):
        return
    out = an.analysis_step(f.body, spec, p.revisions, f.analysis, f.now)
    w.events.extend(out.events)
    w.metrics.extend(out.metrics)
    if not out.recorded:
        w.analysis_ran_at = f.now
        return
    p.status.update(out.status)
    if out.condition is not None:
        generation = f.body["metadata"].get("generation")
        p.conditions = st.merge_conditions(p.conditions, [out.condition], generation, now)
    if out.decision.revisions != p.revisions:
        old, p.revisions = p.revisions, out.decision.revisions
        if out.decision.action in (DecisionAction.PROMOTE, DecisionAction.ROLLBACK):
            _, new_stable_plan = rv.load_revision(f.body, p.revisions.stable, p.records)
            p.handover = handover(f.body, spec, old, f.children, new_stable_plan)


def _requeue(f: Facts, spec: DeploymentSpec, p: _Pass, w: Writes) -> None:
    """Come back when the next analysis is due (nothing else here is time-driven)."""
    if not an.analysable(p.revisions):
        return
    subject = an.subject(p.revisions)[0]
    if "analysis" in w.status or w.analysis_ran_at is not None:
        due = spec.rollout.analysis.interval_seconds
    elif an.awaiting_pods(report.serving_pods(f.children, subject)):
        due = spec.rollout.analysis.interval_seconds  # a pod becoming ready wakes it sooner
    else:
        due = an.seconds_until_due(f.body, spec, f.now, f.analysis_ran_at)
    due = max(due, 0.05)
    w.requeue_after = due if w.requeue_after is None else min(due, w.requeue_after)


def decide(f: Facts, build: RevisionBuilder = revision_objects) -> Writes:
    """The writes that bring the cluster and the status to what ``f`` asks for (pure; raises
    OperatorError when a live revision cannot be rebuilt, e.g. its record was deleted)."""
    if (f.body.get("metadata") or {}).get("deletionTimestamp"):
        # Being deleted (another's finalizer holds it, or a foreground deletion removes its
        # children first): nothing is made again, or the garbage collector and the operator would
        # take turns and the deletion would never end.
        return Writes()
    now = format_time(f.now)
    current = f.body.get("status") or {}
    try:
        spec = parse_spec(f.body.get("spec"))
    except SpecError as e:
        return sp.invalid_spec_writes(f.body, e, now)
    w = Writes()
    p = _Pass(
        revisions=Revisions.from_status(current.get("revisions")),
        records=dict(rv.records_of(f.children)),
        conditions=list(current.get("conditions") or []),
        placed_message=_placed_message(f),
    )
    if sp.needs_spec_step(f.body):
        try:
            out = sp.spec_step(f, spec, now, w)
        except SpecError as e:
            return sp.invalid_spec_writes(f.body, e, now)
        if out.stop:
            return w
        p.revisions, p.records, p.blocked, p.spec_step = out.revisions, out.records, out.blocked, True
        p.placed_message = out.placed_message
        p.status.update(out.status)
    else:
        _analysis(f, spec, p, w, now)
        # After the analysis: a rollback in this pass already blocks the spec's revision.
        if spec_revision := rv.spec_revision(f.body, p.records):
            p.blocked = decisions.blocked_message(p.revisions, spec_revision)
    if not p.revisions.stable:
        w.status = st.status_patch(current, p.status)
        return w
    live = workload_step(f.body, spec, p.revisions, p.records, f.children, w, build, p.handover)
    history = (p.status.get("analysis") or current.get("analysis") or {}).get("history") or []
    progress = decisions.progress(p.revisions, history, an.thresholds(spec))
    fields = _autoscaling({**p.status, **_status(f, p, live, now, progress)}, f, spec, p, now)
    if (held := sp.held_invalid_spec(f.body)) is not None:
        fields = sp.keep_invalid_spec(fields, held, now)  # a child moved; the spec is still refused
    w.status = st.status_patch(current, fields)
    w.events.extend(report.phase_events(current, w.status))
    w.events.extend(report.decryption_events(current, w.status))
    w.status_first = moves_running_revisions(current, w.status)
    _requeue(f, spec, p, w)
    return w


def moves_running_revisions(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether a status patch records a decision about revisions that already run (a new canary,
    a promotion, a rollback): then it is written before any object moves, so that an operator
    stopped between the two finds the decision and only finishes it. A first deployment moves
    nothing that runs, and a patch that only follows the children decides nothing: their objects,
    scales and pod labels go out together with it."""
    decided = "revisions" in patch or "lastRollback" in patch
    return decided and bool(Revisions.from_status(current.get("revisions")).stable)


def _autoscaling(
    fields: dict[str, Any], f: Facts, spec: DeploymentSpec, p: _Pass, now: str
) -> dict[str, Any]:
    """``status.autoscaling`` and the Autoscaling condition (removed when autoscaling is off)."""
    meta = f.body["metadata"]
    conditions = list(fields.get("conditions") or [])
    if spec.autoscaling is None:
        if any(c.get("type") == ConditionType.AUTOSCALING for c in conditions):
            fields["conditions"] = [c for c in conditions if c.get("type") != ConditionType.AUTOSCALING]
        if (f.body.get("status") or {}).get("autoscaling") is not None:
            fields["autoscaling"] = None
        return fields
    metric_names = autoscaling.metric_names()
    hpa = f.children.get(("HorizontalPodAutoscaler", names.serving_name(str(meta["name"]))))
    pods = report.serving_pods(f.children, p.revisions.stable)
    cond = autoscale.autoscaling_condition(
        spec.autoscaling, metric_names, str(meta["namespace"]), hpa, f.metrics_api, pods
    )
    fields["conditions"] = st.merge_conditions(conditions, [cond], meta.get("generation"), now)
    fields["autoscaling"] = autoscale.autoscaling_fields(spec.autoscaling, metric_names, hpa)
    return fields


def _status(f: Facts, p: _Pass, live: Live, now: str, progress: decisions.Progress | None) -> dict[str, Any]:
    owner = str(f.body["metadata"]["name"])
    revs = p.revisions
    assert live.stable is not None  # the stable revision always runs
    stable_obs = report.observe(f.children, owner, revs.stable, live.stable)
    canary_obs = None
    if revs.canary and live.canary is not None:
        canary_obs = report.observe(f.children, owner, revs.canary, live.canary)
    blockers = (
        report.revision_blocker(f.children, revs.stable, stable_obs),
        report.revision_blocker(f.children, revs.canary, canary_obs) if canary_obs is not None else None,
    )
    return report.rollout_status(
        f.body,
        revs,
        (stable_obs, canary_obs),
        blockers,
        p.placed_message,
        p.blocked,
        now,
        p.conditions,
        progress,
        p.status.get("lastRollback"),
    )
