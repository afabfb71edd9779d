"""gather: the facts one decision is made from, read from the watch caches.

The only reads that leave the process are those a decision cannot do without: the objects the
spec refers to while the spec step runs (PVCs are watched; a Secret, or a PVC the watch has not
shown, is looked up),
and, when an analysis is due, the analysis itself (Triton's metrics, the golden set).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.api.types import Role
from deepseek_operator.errors import SpecError
from deepseek_operator.kube import client as kube
from deepseek_operator.reconcile import analysis_step as an
from deepseek_operator.reconcile import report
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.reconcile import spec_step as sp
from deepseek_operator.reconcile.cache import Cache, Owner
from deepseek_operator.reconcile.facts import AnalysisRun, ChildKey, Facts
from deepseek_operator.rollout import analysis, golden
from deepseek_operator.rollout import revisions as rec
from deepseek_operator.rollout.decisions import Measurement, Revisions
from deepseek_operator.rollout.figures import Counters

_API_VERSION = {"PersistentVolumeClaim": "v1", "Secret": "v1", "ConfigMap": "v1"}


def check_references(cache: Cache, spec: DeploymentSpec, namespace: str) -> dict[tuple[str, str], bool]:
    """Whether each object the spec refers to exists: a PVC in the watch cache, else (a PVC the
    watch may not have delivered yet, a Secret: Secrets are not watched) one GET."""
    out: dict[tuple[str, str], bool] = {}
    for ref in sp.references(spec, namespace):
        if (ref.kind, ref.name) in out:
            continue
        out[(ref.kind, ref.name)] = cache.has(ref.kind, namespace, ref.name) or (
            kube.get(_API_VERSION[ref.kind], ref.kind, namespace, ref.name) is not None
        )
    return out


def _runtime(records: Mapping[str, Mapping[str, Any]], revision: str) -> str:
    record = records.get(revision)
    if record is None:
        return "pytorch"  # no record, no workload: the analysis finds no pods and is inconclusive
    return rec.plan_for_revision(dict(record)).runtime


def run_analysis(
    body: Mapping[str, Any], spec: DeploymentSpec, children: Mapping[ChildKey, Mapping[str, Any]]
) -> AnalysisRun:
    """Analyse the revision under test now (the canary, else the stable revision)."""
    meta = body["metadata"]
    ns, owner = str(meta["namespace"]), str(meta["name"])
    status = body.get("status") or {}
    revs = Revisions.from_status(status.get("revisions"))
    subject, role = an.subject(revs)
    records = rv.records_of(children)
    counters = Counters.from_status(((status.get("analysis") or {}).get("counters") or {}).get(subject))
    try:
        cases = analysis.load_golden_set(spec, ns)
    except golden.GoldenSetError as e:
        problem = f"golden set invalid: {e}"
        return AnalysisRun(subject, role, Measurement(problems=(problem,)), counters, problem)
    m, kept = analysis.measure(
        ns,
        owner,
        subject,
        _runtime(records, subject),
        spec,
        cases,
        counters,
        report.serving_pods(children, subject),
    )
    run = AnalysisRun(subject, role, m, kept)
    stable_score = None
    if cases is not None and m.accuracy is not None and role == Role.CANARY:
        stable_score = analysis.score_only(
            ns,
            owner,
            revs.stable,
            _runtime(records, revs.stable),
            spec,
            cases,
            report.serving_pods(children, revs.stable),
        )
    return an.with_baseline(run, revs, stable_score, scored=cases is not None)


def analysis_due(
    body: Mapping[str, Any],
    spec: DeploymentSpec,
    children: Mapping[ChildKey, Mapping[str, Any]],
    now: dt.datetime,
    ran_at: dt.datetime | None,
) -> bool:
    """Whether this pass runs an analysis (the same test decide's requeue uses)."""
    revs = Revisions.from_status((body.get("status") or {}).get("revisions"))
    if not an.analysable(revs) or an.seconds_until_due(body, spec, now, ran_at) > 0:
        return False
    return not an.awaiting_pods(report.serving_pods(children, an.subject(revs)[0]))


def gather(cache: Cache, owner: Owner, now: dt.datetime, ran_at: dt.datetime | None) -> Facts | None:
    """The facts for ``owner`` now (None when the resource is gone)."""
    body = cache.resource(owner)
    if body is None:
        return None
    children = cache.children(owner)
    try:
        spec = parse_spec(body.get("spec"))
    except SpecError:
        return Facts(body=body, now=now, children=children)
    if sp.needs_spec_step(body):
        return Facts(
            body=body,
            now=now,
            children=children,
            references=check_references(cache, spec, owner[0]),
            analysis_ran_at=ran_at,
        )
    run = run_analysis(body, spec, children) if analysis_due(body, spec, children, now, ran_at) else None
    return Facts(
        body=body,
        now=now,
        children=children,
        analysis=run,
        analysis_ran_at=ran_at,
        metrics_api=cache.metrics_api() if spec.autoscaling is not None else None,
    )
