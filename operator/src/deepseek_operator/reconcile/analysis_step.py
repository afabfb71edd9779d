"""The analysis step (pure): when an analysis is due, of whom, and what its figures decide.

Gathering runs the analysis itself (it talks to the pods); this module says when one is due,
judges the figures (:func:`deepseek_operator.rollout.decisions.evaluate`), appends them to the
history, and turns the rollout decision into status fields, events and metric moves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from deepseek_operator import status as st
from deepseek_operator.api.clock import format_time, parse_time
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.api.types import ConditionType, DecisionAction, Role, Verdict
from deepseek_operator.reconcile.facts import AnalysisRun, Event, MetricOp
from deepseek_operator.rollout import decisions
from deepseek_operator.rollout.decisions import Revisions
from deepseek_operator.rollout.figures import startup_failure

# The operator's metrics a decision moves (see :mod:`deepseek_operator.metrics`).
ANALYSES, ROLLBACKS, PROMOTIONS, DRIFT_TO_ROLLBACK = (
    "analyses",
    "rollbacks",
    "promotions",
    "drift_to_rollback",
)


def reason_kinds(reasons: list[str] | tuple[str, ...]) -> list[str]:
    """The metric label of each failure reason (latency, error-rate, accuracy, startup)."""
    kinds = set()
    for r in reasons:
        if r.startswith("p99"):
            kinds.add("latency")
        elif r.startswith("error rate"):
            kinds.add("error-rate")
        elif r.startswith("golden-set"):
            kinds.add("accuracy")
        elif r.startswith("pods not starting"):
            kinds.add("startup")
    return sorted(kinds) or ["other"]


def subject(revs: Revisions) -> tuple[str, Role]:
    """The revision analysed now and its role: the canary, else the stable revision."""
    if revs.canary:
        return revs.canary, Role.CANARY
    return revs.stable, Role.STABLE


def analysable(revs: Revisions) -> bool:
    """Whether anything is analysed: a stable revision that has not failed."""
    return bool(revs.stable) and revs.stable not in revs.failed


def awaiting_pods(pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the revision under test has no ready pod yet, and nothing says they will not start:
    an analysis now could only be inconclusive, so it waits for a pod to become ready (that pod
    event starts the next pass)."""
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for p in pods
        for c in (p.get("status") or {}).get("conditions") or []
    )
    return not ready and startup_failure(pods) is None


def _last_run(body: Mapping[str, Any], ran_at: dt.datetime | None) -> dt.datetime | None:
    last = parse_time(((body.get("status") or {}).get("analysis") or {}).get("lastRunTime"))
    if ran_at is not None and (last is None or ran_at > last):
        return ran_at
    return last


def seconds_until_due(
    body: Mapping[str, Any], spec: DeploymentSpec, now: dt.datetime, ran_at: dt.datetime | None
) -> float:
    """Seconds until the next analysis is due (0: due now). ``ran_at``: an analysis ran then
    whose result was not written (it repeated the last one)."""
    last = _last_run(body, ran_at)
    if last is None:
        return 0.0
    left = spec.rollout.analysis.interval_seconds - (now - last).total_seconds()
    return 0.0 if left <= 0.05 else left


def thresholds(spec: DeploymentSpec) -> decisions.Thresholds:
    """The analysis thresholds of ``spec``."""
    a = spec.rollout.analysis
    return decisions.Thresholds(
        max_p99_latency_ms=a.max_p99_latency_ms,
        max_error_rate=a.max_error_rate,
        min_score=a.accuracy.min_score,
        max_drop=a.accuracy.max_drop,
        successful_analyses=spec.rollout.successful_analyses,
        failure_limit=a.failure_limit,
        auto_rollback=spec.rollout.auto_rollback,
        golden_set=a.accuracy.golden_set is not None,
    )


def analysis_condition(verdict: str, reasons: tuple[str, ...], revision: str) -> st.Condition:
    """The AnalysisPassing condition after one analysis."""
    text = "; ".join(reasons)
    if verdict == Verdict.PASS:
        return st.Condition(
            ConditionType.ANALYSIS_PASSING, "True", "Passed", f"revision {revision} passed analysis"
        )
    if verdict == Verdict.FAIL:
        return st.Condition(ConditionType.ANALYSIS_PASSING, "False", "Failed", f"revision {revision}: {text}")
    reason = "GoldenSetInvalid" if any(r.startswith("golden set") for r in reasons) else "Inconclusive"
    return st.Condition(ConditionType.ANALYSIS_PASSING, "Unknown", reason, f"revision {revision}: {text}")


def repeats(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``new`` is an inconclusive analysis saying what the last recorded one said."""
    return (
        new.get("verdict") == Verdict.INCONCLUSIVE
        and previous.get("verdict") == Verdict.INCONCLUSIVE
        and previous.get("revision") == new.get("revision")
        and previous.get("role") == new.get("role")
        and previous.get("message") == new.get("message")
    )


def _figures(a: Mapping[str, Any]) -> str:
    return (
        f"p99 {a['p99LatencyMs']} ms ({a['latencySource'] or 'no source'}), error rate {a['errorRate']}, "
        f"score {a['accuracy']}, baseline {a['baselineAccuracy']}"
    )


def drift_seconds(history: list[Mapping[str, Any]], revision: str, now: dt.datetime) -> float | None:
    """Seconds since the first failing analysis of ``revision``'s latest failing streak."""
    first = None
    for entry in reversed(history):
        if entry.get("revision") != revision:
            continue
        if entry.get("verdict") == Verdict.PASS:
            break
        if entry.get("verdict") == Verdict.FAIL:
            first = entry.get("time")
    start = parse_time(first)
    return None if start is None else (now - start).total_seconds()


@dataclass
class AnalysisOutcome:
    """What one analysis leads to."""

    decision: decisions.Decision
    status: dict[str, Any] = field(default_factory=dict)  # analysis, revisions, lastRollback
    condition: st.Condition | None = None
    events: list[Event] = field(default_factory=list)
    metrics: list[MetricOp] = field(default_factory=list)
    recorded: bool = True  # False: it repeated the last inconclusive result and is not written


def _status_analysis(
    current: Mapping[str, Any],
    run: AnalysisRun,
    revs: Revisions,
    entry: Mapping[str, Any],
    history: list[Any],
) -> dict[str, Any]:
    last_verdict, n = decisions.streak(history, run.subject, run.role, revs.epoch)
    counters = current.get("counters") or {}
    new_counters = {k: v for k, v in counters.items() if k in (revs.stable, revs.canary)}
    if run.counters is not None:
        new_counters[run.subject] = run.counters.to_status()
    reasons = entry["reasons"]
    return {
        "revision": run.subject,
        "role": run.role,
        "verdict": entry["verdict"],
        "message": "; ".join(reasons) if reasons else "all figures within their thresholds",
        "p99LatencyMs": entry["p99LatencyMs"],
        "latencySource": entry["latencySource"],
        "errorRate": entry["errorRate"],
        "requests": entry["requests"],
        "accuracy": entry["accuracy"],
        "baselineAccuracy": entry["baselineAccuracy"],
        "consecutiveFailures": n if last_verdict == Verdict.FAIL else 0,
        "consecutiveSuccesses": n if last_verdict == Verdict.PASS else 0,
        "lastRunTime": entry["time"],
        "history": history,
        "counters": new_counters,
    }


def _decision_effects(
    out: AnalysisOutcome,
    body: Mapping[str, Any],
    revs: Revisions,
    analysis: Mapping[str, Any],
    now: dt.datetime,
) -> None:
    d = out.decision
    meta = body["metadata"]
    who = (str(meta["namespace"]), str(meta["name"]))
    if d.action in (
        DecisionAction.PROMOTE,
        DecisionAction.ROLLBACK,
        DecisionAction.FAIL,
        DecisionAction.VERIFY,
    ):
        out.status["revisions"] = d.revisions.to_status()
    if d.action == DecisionAction.ROLLBACK:
        role = analysis["role"]
        out.status["lastRollback"] = {
            "from": d.rolled_back_from,
            "to": d.rolled_back_to,
            "reason": d.reason,
            "time": format_time(now),
            "role": role,
        }
        out.events.append(
            (
                "Warning",
                "RolledBack",
                f"rolled back {d.rolled_back_from} -> {d.rolled_back_to}: {d.reason} ({_figures(analysis)})",
            )
        )
        reasons = tuple(analysis["history"][-1]["reasons"])
        out.metrics += [MetricOp(ROLLBACKS, (*who, kind, role)) for kind in reason_kinds(reasons)]
        if (drift := drift_seconds(analysis["history"], d.rolled_back_from, now)) is not None:
            out.metrics.append(MetricOp(DRIFT_TO_ROLLBACK, who, drift))
    elif d.action == DecisionAction.PROMOTE:
        out.events.append(
            ("Normal", "Promoted", f"canary {revs.canary} promoted: {d.reason} ({_figures(analysis)})")
        )
        out.metrics.append(MetricOp(PROMOTIONS, who))
    elif d.action == DecisionAction.FAIL:
        out.events.append(("Warning", "AnalysisFailed", f"revision {revs.stable} failed: {d.reason}"))
    elif d.action == DecisionAction.HALT:
        out.events.append(
            (
                "Warning",
                "AnalysisFailing",
                f"revision {d.revisions.canary or d.revisions.stable}: {d.reason}; "
                "not rolled back (autoRollback is false or there is no earlier revision)",
            )
        )


def analysis_step(
    body: Mapping[str, Any], spec: DeploymentSpec, revs: Revisions, run: AnalysisRun, now: dt.datetime
) -> AnalysisOutcome:
    """Judge ``run`` and decide the rollout (pure)."""
    current = (body.get("status") or {}).get("analysis") or {}
    meta = body["metadata"]
    t = thresholds(spec)
    m = run.measurement
    verdict, reasons = decisions.evaluate(m, t)
    entry = decisions.record(run.subject, run.role, revs.epoch, format_time(now), verdict, reasons, m)
    history = decisions.append_history(current.get("history") or [], entry, t)
    decision = decisions.decide_rollout(revs, history, t)
    analysis = _status_analysis(current, run, revs, entry, history)
    out = AnalysisOutcome(decision)
    out.metrics.append(MetricOp(ANALYSES, (str(meta["namespace"]), str(meta["name"]), verdict, run.role)))
    if run.golden_problem and current.get("message") != analysis["message"]:
        out.events.append(("Warning", "GoldenSetInvalid", run.golden_problem))
    if repeats(current, analysis) and decision.action == DecisionAction.NONE:
        out.recorded = False  # the same inconclusive result again: not worth a write every interval
        return out
    out.status["analysis"] = analysis
    out.condition = analysis_condition(verdict, tuple(reasons), run.subject)
    _decision_effects(out, body, revs, analysis, now)
    return out


def baseline_for(
    run_role: str, measured: float | None, revs: Revisions, stable_score: float | None
) -> float | None:
    """The score a canary's (or the stable revision's) golden-set score is compared with: for a
    canary, the serving revision's score measured at the same moment when there is one, so that a
    drift both share is not blamed on the canary; else the score recorded when stable was verified."""
    if measured is None:
        return None
    if run_role == Role.CANARY and stable_score is not None:
        return stable_score
    return revs.baseline_accuracy


def with_baseline(run: AnalysisRun, revs: Revisions, stable_score: float | None, scored: bool) -> AnalysisRun:
    """``run`` with its measurement's baseline filled in (only when a golden set scored it)."""
    if not scored:
        return run
    baseline = baseline_for(run.role, run.measurement.accuracy, revs, stable_score)
    if run.measurement.accuracy is None:
        return run
    return replace(run, measurement=replace(run.measurement, baseline_accuracy=baseline))
