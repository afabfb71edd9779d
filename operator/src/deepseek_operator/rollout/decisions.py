"""Rollout decisions, pure: which revisions run, and what an analysis history means.

The rollout state lives in ``status.revisions`` (so it survives an operator restart) and is
read into :class:`Revisions`. Two functions move it:

- :func:`plan_step` on a spec change (a new desired revision);
- :func:`decide_rollout` after each analysis (promote, roll back, fail, or wait).

Both are functions of their inputs only; the reconciler applies what they return. The
semantics follow Argo Rollouts' analysis (consecutive successes to promote, a failure limit to
abort, inconclusive runs neither pass nor fail), extended with the serving revision's own
analysis after promotion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from deepseek_operator.api.names import RETRY_ANNOTATION
from deepseek_operator.api.types import CanaryMode, DecisionAction, Role, Verdict

HISTORY_LIMIT = 20  # analyses kept in status.analysis.history


@dataclass(frozen=True)
class Revisions:
    """Which revisions exist and what they are for (``status.revisions``)."""

    stable: str = ""  # serves traffic
    canary: str = ""  # analysed beside stable, taking its share of traffic
    previous: str = ""  # the last good revision before stable: rollback target, kept warm as standby
    failed: tuple[str, ...] = ()  # rolled back or failed: not retried until the spec or retry changes
    lent: int = 0  # stable replicas whose GPUs the canary took (no free GPUs for it)
    retry: str = ""  # the retry annotation's value last seen
    verified: bool = False  # stable has passed analysis (promoted, or a first deployment that passed)
    baseline_accuracy: float | None = None  # the stable revision's golden-set score when it was verified
    epoch: int = 0  # bumped whenever stable or canary changes; analyses of older epochs do not count

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> Revisions:
        """Read ``status.revisions`` (missing fields take their defaults)."""
        raw = raw or {}
        baseline = raw.get("baselineAccuracy")
        return cls(
            stable=str(raw.get("stable") or ""),
            canary=str(raw.get("canary") or ""),
            previous=str(raw.get("previous") or ""),
            failed=tuple(str(r) for r in raw.get("failed") or ()),
            lent=int(raw.get("lent") or 0),
            retry=str(raw.get("retry") or ""),
            verified=bool(raw.get("verified", False)),
            baseline_accuracy=None if baseline is None else float(baseline),
            epoch=int(raw.get("epoch") or 0),
        )

    def to_status(self) -> dict[str, Any]:
        """``status.revisions`` as written (every field, so that a merge patch replaces old values)."""
        return {
            "stable": self.stable,
            "canary": self.canary,
            "previous": self.previous,
            "failed": list(self.failed),
            "canaryMode": self.canary_mode.value if self.canary_mode else "",
            "lent": self.lent,
            "retry": self.retry,
            "verified": self.verified,
            "baselineAccuracy": self.baseline_accuracy,
            "epoch": self.epoch,
        }

    @property
    def canary_mode(self) -> CanaryMode | None:
        """How the canary got its GPUs: replacing lent stable replicas, or added; None: no canary."""
        if not self.canary:
            return None
        return CanaryMode.REPLACE_REPLICA if self.lent else CanaryMode.ADD_REPLICAS

    def moved(self, **changes: Any) -> Revisions:
        """A copy with ``changes`` and a new epoch (stable or canary changed)."""
        return replace(self, epoch=self.epoch + 1, **changes)


Event = tuple[str, str, str]  # (Normal|Warning, reason, message)


@dataclass(frozen=True)
class Step:
    """What a spec change does to the rollout."""

    revisions: Revisions
    events: tuple[Event, ...] = ()
    blocked: str = ""  # the desired revision is not started, and why
    new_canary: bool = False  # a canary was started: the caller decides add vs replace


def blocked_message(revs: Revisions, desired: str) -> str:
    """Why ``desired`` is not started (it failed and was rolled back), or "" when it may start."""
    if desired in revs.failed and desired != revs.stable:
        return (
            f"revision {desired} failed analysis and was rolled back; it is not retried until the "
            f"spec changes or the annotation {RETRY_ANNOTATION} is set to a new value"
        )
    return ""


def _apply_retry(revs: Revisions, desired: str, retry: str, events: list[Event]) -> Revisions:
    """``revs`` after a new value of the retry annotation: ``desired`` is no longer failed."""
    if not retry or retry == revs.retry:
        return revs
    if desired in revs.failed:
        events.append(("Normal", "Retry", f"retrying revision {desired}: the retry annotation is new"))
        revs = replace(revs, failed=tuple(r for r in revs.failed if r != desired))
    return replace(revs, retry=retry)


def plan_step(current: Revisions, desired: str, retry: str = "") -> Step:
    """Move the rollout towards ``desired`` (the spec's revision).

    - nothing serves yet, or what serves failed with nothing to fall back on: ``desired``
      becomes stable at once (there is nothing to compare a canary with);
    - ``desired`` is stable: any other canary is aborted;
    - ``desired`` failed before: it is not started again unless ``retry`` (the retry
      annotation) is new;
    - otherwise ``desired`` becomes the canary (replacing another canary, which is aborted).
    """
    events: list[Event] = []
    revs = _apply_retry(current, desired, retry, events)
    if msg := blocked_message(revs, desired):
        if revs.canary:
            events.append(("Normal", "CanaryAborted", f"canary {revs.canary} aborted: the spec changed"))
            revs = revs.moved(canary="", lent=0)
        return Step(revs, tuple(events), blocked=msg)
    if desired == revs.stable:
        if revs.canary:
            events.append(
                ("Normal", "CanaryAborted", f"canary {revs.canary} aborted: the spec is back at {desired}")
            )
            revs = revs.moved(canary="", lent=0)
        return Step(revs, tuple(events))
    if not revs.stable or revs.stable in revs.failed:
        if revs.stable:
            events.append(
                ("Normal", "Replaced", f"revision {desired} replaces {revs.stable}, which failed analysis")
            )
        revs = revs.moved(stable=desired, canary="", lent=0, verified=False, baseline_accuracy=None)
        return Step(revs, tuple(events))
    if desired == revs.canary:
        return Step(revs, tuple(events))
    if revs.canary:
        events.append(("Normal", "CanaryAborted", f"canary {revs.canary} aborted: the spec changed"))
    revs = revs.moved(canary=desired, lent=0)
    return Step(revs, tuple(events), new_canary=True)


@dataclass(frozen=True)
class Thresholds:
    """The analysis settings that judge one run (``spec.rollout``)."""

    max_p99_latency_ms: float = 500.0
    max_error_rate: float = 0.05
    min_score: float = 0.9
    max_drop: float = 0.05
    successful_analyses: int = 3
    failure_limit: int = 3
    auto_rollback: bool = True
    golden_set: bool = False  # a golden set is configured: accuracy is required for a Pass


@dataclass(frozen=True)
class Measurement:
    """The figures of one analysis of one revision (None: no data)."""

    p99_latency_ms: float | None = None
    latency_source: str = ""  # "triton" (the pods' summaries) | "golden" (the golden-set requests)
    error_rate: float | None = None
    requests: int = 0
    accuracy: float | None = None
    baseline_accuracy: float | None = None
    problems: tuple[str, ...] = ()  # why figures are missing (unreachable, malformed golden set, ...)
    startup_failure: str = ""  # the pods cannot start (crash loop, image pull): a failure by itself


def _failures(m: Measurement, t: Thresholds) -> list[str]:
    """Every threshold that ``m`` breaks, with its figures."""
    fails: list[str] = []
    if m.startup_failure:
        fails.append(f"pods not starting: {m.startup_failure}")
    if m.p99_latency_ms is not None and m.p99_latency_ms > t.max_p99_latency_ms:
        fails.append(f"p99 latency {m.p99_latency_ms:.0f} ms > {t.max_p99_latency_ms:g} ms")
    if m.error_rate is not None and m.error_rate > t.max_error_rate:
        fails.append(f"error rate {m.error_rate:.3f} > {t.max_error_rate:g}")
    if m.accuracy is not None:
        if m.accuracy < t.min_score:
            fails.append(f"golden-set score {m.accuracy:.3f} < minScore {t.min_score:g}")
        if m.baseline_accuracy is not None and m.accuracy < m.baseline_accuracy - t.max_drop - 1e-9:
            fails.append(
                f"golden-set score {m.accuracy:.3f} dropped {m.baseline_accuracy - m.accuracy:.3f} below "
                f"the serving revision's {m.baseline_accuracy:.3f} (maxDrop {t.max_drop:g})"
            )
    return fails


def _missing(m: Measurement, t: Thresholds) -> list[str]:
    """Why a verdict cannot be reached: the problems reported, else each required figure missing."""
    if m.problems:
        return list(m.problems)
    missing: list[str] = []
    if m.p99_latency_ms is None:
        missing.append("no latency figures")
    if m.error_rate is None:
        missing.append("no requests to count errors on")
    if t.golden_set and m.accuracy is None:
        missing.append("no golden-set score")
    return missing


def evaluate(m: Measurement, t: Thresholds) -> tuple[Verdict, tuple[str, ...]]:
    """The verdict of one analysis and its reasons: Fail when any figure breaks its threshold,
    Inconclusive when nothing failed but a required figure is missing, else Pass."""
    if fails := _failures(m, t):
        return Verdict.FAIL, tuple(fails)
    if missing := _missing(m, t):
        return Verdict.INCONCLUSIVE, tuple(missing)
    return Verdict.PASS, ()


def _verdict(value: Any) -> Verdict | None:
    try:
        return Verdict(value)
    except ValueError:
        return None


def streak(
    history: Sequence[Mapping[str, Any]], revision: str, role: Role, epoch: int
) -> tuple[Verdict | None, int]:
    """The latest run of equal verdicts (Pass or Fail) of ``revision`` in ``role`` during ``epoch``,
    newest first; inconclusive analyses are skipped (they neither pass nor fail), an entry with
    no known verdict ends the run. ``(None, 0)`` when there is no run."""
    verdict: Verdict | None = None
    count = 0
    for entry in reversed(history):
        if entry.get("revision") != revision or entry.get("role") != role or entry.get("epoch") != epoch:
            continue
        v = _verdict(entry.get("verdict"))
        if v == Verdict.INCONCLUSIVE:
            continue
        if v is None or (verdict is not None and v != verdict):
            break
        verdict = v
        count += 1
    return verdict, count


@dataclass(frozen=True)
class Decision:
    """What the latest analysis means for the rollout."""

    action: DecisionAction
    revisions: Revisions
    reason: str = ""
    rolled_back_from: str = ""
    rolled_back_to: str = ""


def _failure_reason(history: Sequence[Mapping[str, Any]], revision: str, count: int) -> str:
    latest: Mapping[str, Any] = next((e for e in reversed(history) if e.get("revision") == revision), {})
    reasons = "; ".join(latest.get("reasons") or ()) or "analysis failed"
    return f"{reasons} in {count} consecutive analyses"


def _halt_or_none(failures: int, t: Thresholds) -> DecisionAction:
    # Without auto-rollback the failure limit halts the rollout once, when it is reached.
    return DecisionAction.HALT if failures == t.failure_limit else DecisionAction.NONE


def decide_rollout(revs: Revisions, history: Sequence[Mapping[str, Any]], t: Thresholds) -> Decision:
    """The decision after the newest analysis in ``history`` (status.analysis.history, oldest first).

    Canary: promote after ``successful_analyses`` passes in a row; roll back after
    ``failure_limit`` failures in a row (or halt when auto-rollback is off).
    Stable: after ``failure_limit`` failures in a row, roll back to the previous good revision
    when there is one; a first deployment that never passed fails (nothing to roll back to);
    otherwise halt. A first deployment is verified after ``successful_analyses`` passes.
    """
    if revs.canary:
        verdict, n = streak(history, revs.canary, Role.CANARY, revs.epoch)
        if verdict == Verdict.FAIL and n >= t.failure_limit:
            reason = _failure_reason(history, revs.canary, n)
            if not t.auto_rollback:
                return Decision(_halt_or_none(n, t), revs, reason)
            new = revs.moved(canary="", lent=0, failed=(*revs.failed, revs.canary))
            return Decision(DecisionAction.ROLLBACK, new, reason, revs.canary, revs.stable)
        if verdict == Verdict.PASS and n >= t.successful_analyses:
            latest: Mapping[str, Any] = next(
                (e for e in reversed(history) if e.get("revision") == revs.canary), {}
            )
            score = latest.get("accuracy")
            new = revs.moved(
                stable=revs.canary,
                canary="",
                lent=0,
                previous=revs.stable,
                verified=True,
                baseline_accuracy=None if score is None else float(score),
            )
            return Decision(DecisionAction.PROMOTE, new, f"{n} consecutive passing analyses")
        return Decision(DecisionAction.NONE, revs)
    if not revs.stable or revs.stable in revs.failed:
        return Decision(DecisionAction.NONE, revs)
    verdict, n = streak(history, revs.stable, Role.STABLE, revs.epoch)
    if verdict == Verdict.FAIL and n >= t.failure_limit:
        reason = _failure_reason(history, revs.stable, n)
        if revs.previous and t.auto_rollback:
            new = revs.moved(
                stable=revs.previous,
                previous="",
                failed=(*revs.failed, revs.stable),
                verified=True,
                baseline_accuracy=None,
            )
            return Decision(DecisionAction.ROLLBACK, new, reason, revs.stable, revs.previous)
        if not revs.verified:
            new = revs.moved(failed=(*revs.failed, revs.stable))
            return Decision(DecisionAction.FAIL, new, f"{reason}; no earlier revision to roll back to")
        return Decision(_halt_or_none(n, t), revs, reason)
    if verdict == Verdict.PASS and n >= t.successful_analyses and not revs.verified:
        newest: Mapping[str, Any] = next(
            (e for e in reversed(history) if e.get("revision") == revs.stable), {}
        )
        score = newest.get("accuracy")
        new = replace(revs, verified=True, baseline_accuracy=None if score is None else float(score))
        return Decision(DecisionAction.VERIFY, new, f"{n} consecutive passing analyses")
    return Decision(DecisionAction.NONE, revs)


@dataclass(frozen=True)
class Progress:
    """Where the analysis of the revision under test stands, for status (and a health check that
    must not guess the operator's defaults): its passes and failures in a row during this epoch,
    the counts that promote or roll back, and whether the rollout is halted on its failures."""

    revision: str
    role: Role
    passed: int
    needed: int  # successfulAnalyses
    failed: int
    limit: int  # failureLimit
    halted: str = ""  # why, when the failure limit is reached and nothing rolls back
    auto_rollback: bool = True


def progress(revs: Revisions, history: Sequence[Mapping[str, Any]], t: Thresholds) -> Progress | None:
    """The analysis progress of the canary (else the stable revision) after :func:`decide_rollout`
    has moved ``revs``; None when nothing is analysed. A revision at the failure limit that is still
    under test is halted: :func:`decide_rollout` rolls back (or fails) whenever it can, so one that
    stays is one it would not move (autoRollback is false, or no earlier good revision)."""
    if revs.canary:
        revision, role = revs.canary, Role.CANARY
    elif revs.stable and revs.stable not in revs.failed:
        revision, role = revs.stable, Role.STABLE
    else:
        return None
    verdict, n = streak(history, revision, role, revs.epoch)
    passed = n if verdict == Verdict.PASS else 0
    failed = n if verdict == Verdict.FAIL else 0
    halted = ""
    if failed >= t.failure_limit:
        latest: Mapping[str, Any] = next((e for e in reversed(history) if e.get("revision") == revision), {})
        halted = "; ".join(latest.get("reasons") or ()) or "analysis failed"
    return Progress(
        revision, role, passed, t.successful_analyses, failed, t.failure_limit, halted, t.auto_rollback
    )


@dataclass(frozen=True)
class Workload:
    """One revision's serving workload as the rollout wants it."""

    revision: str
    role: Role
    replicas: int | None  # None: the HPA owns the count
    traffic: bool  # its pods are in the Service


def plan_workloads(
    revs: Revisions, replicas: int | None, canary_replicas: int, standby_replicas: int
) -> list[Workload]:
    """The workloads of each live revision. ``replicas`` None means an HPA owns the stable count.

    A canary in replace mode (``revs.lent``) takes the place of that many stable replicas; the
    previous revision is kept at ``standby_replicas`` without traffic (0 keeps only the object).
    """
    out: list[Workload] = []
    if revs.stable:
        stable_replicas = None if replicas is None else max(replicas - revs.lent, 0)
        out.append(Workload(revs.stable, Role.STABLE, stable_replicas, True))
    if revs.canary:
        out.append(Workload(revs.canary, Role.CANARY, canary_replicas, True))
    if revs.previous and revs.previous not in (revs.stable, revs.canary):
        out.append(Workload(revs.previous, Role.STANDBY, standby_replicas, False))
    return out


def record(
    revision: str,
    role: Role,
    epoch: int,
    time: str,
    verdict: Verdict,
    reasons: Sequence[str],
    m: Measurement,
) -> dict[str, Any]:
    """One entry of ``status.analysis.history``."""
    return {
        "revision": revision,
        "role": str(role),
        "epoch": epoch,
        "time": time,
        "verdict": str(verdict),
        "reasons": list(reasons),
        "p99LatencyMs": None if m.p99_latency_ms is None else round(m.p99_latency_ms, 1),
        "latencySource": m.latency_source,
        "errorRate": None if m.error_rate is None else round(m.error_rate, 4),
        "requests": m.requests,
        "accuracy": None if m.accuracy is None else round(m.accuracy, 4),
        "baselineAccuracy": None if m.baseline_accuracy is None else round(m.baseline_accuracy, 4),
    }


def append_history(
    history: Sequence[Mapping[str, Any]], entry: Mapping[str, Any], t: Thresholds
) -> list[dict[str, Any]]:
    """``history`` with ``entry`` added; the oldest are dropped beyond :data:`HISTORY_LIMIT`, or beyond
    what the longest streak the thresholds count needs."""
    keep = max(HISTORY_LIMIT, t.successful_analyses + 1, t.failure_limit + 1)
    return [dict(e) for e in (*history, entry)][-keep:]
