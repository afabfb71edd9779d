"""The figures of one analysis, pure: Triton's counters and the golden-set answers in, a
:class:`~deepseek_operator.rollout.decisions.Measurement` out. No client, no clock, no network:
:mod:`deepseek_operator.rollout.analysis` gathers the inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deepseek_operator.rollout import golden
from deepseek_operator.rollout.decisions import Measurement

if TYPE_CHECKING:  # the types only: probe itself does the network I/O
    from deepseek_operator.rollout import probe

# Without a golden set, one unscored request still gives latency and errors when there is no traffic.
SMOKE_CASE = golden.GoldenCase(prompt="Reply with OK.", kind="contains", value="", max_tokens=8)


# Container waiting reasons that mean a pod will not start by waiting longer.
START_FAILURES = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def startup_failure(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the revision's pods cannot start (a crash loop, an image that cannot be pulled), from
    their container statuses; None when nothing says so (pure)."""
    for pod in pods:
        status = pod.get("status") or {}
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in START_FAILURES:
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                name = (pod.get("metadata") or {}).get("name")
                return (
                    f"pod {name} container {cs.get('name')} is in {waiting['reason']} "
                    f"(restarts {cs.get('restartCount', 0)}){detail}"
                )
    return None


def model_inputs(runtime: str) -> tuple[str, str]:
    """(model, max-tokens input) a client calls: the ensemble on the engine path, the LLM-API model
    on the PyTorch path."""
    return (
        ("tensorrt_llm", "sampling_param_max_tokens") if runtime == "pytorch" else ("ensemble", "max_tokens")
    )


def p99(values: Sequence[float]) -> float | None:
    """The nearest-rank 99th percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)]


@dataclass(frozen=True)
class Counters:
    """Triton's counters at the last analysis, and the operator's own requests sent then
    (they show up in the counters read at the next one). Kept in status for restarts."""

    success: float = 0.0
    failure: float = 0.0
    golden_total: int = 0
    golden_failed: int = 0

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> Counters | None:
        """Read one revision's entry of ``status.analysis.counters``."""
        if not raw:
            return None
        return cls(
            float(raw.get("success") or 0),
            float(raw.get("failure") or 0),
            int(raw.get("goldenTotal") or 0),
            int(raw.get("goldenFailed") or 0),
        )

    def to_status(self) -> dict[str, Any]:
        """As written to status."""
        return {
            "success": self.success,
            "failure": self.failure,
            "goldenTotal": self.golden_total,
            "goldenFailed": self.golden_failed,
        }


def combine(
    sample: probe.MetricsSample | None,
    previous: Counters | None,
    results: Sequence[probe.CaseResult],
    scored: bool,
    cases: Sequence[golden.GoldenCase],
) -> tuple[Measurement, Counters | None]:
    """The figures of one analysis from Triton's metrics now, the counters of the last analysis and
    the golden-set results now (pure). Returns the counters to keep for the next analysis."""
    golden_total = len(results)
    golden_failed = sum(1 for r in results if r.error is not None)
    external_total = external_failed = 0.0
    kept: Counters | None = None
    if sample is not None:
        if previous is not None:
            d_success = sample.success - previous.success
            d_failure = sample.failure - previous.failure
            if d_success < 0 or d_failure < 0:  # a pod restarted: its counters began again
                d_success, d_failure = sample.success, sample.failure
            external_total = max(d_success + d_failure - previous.golden_total, 0.0)
            external_failed = max(d_failure - previous.golden_failed, 0.0)
        kept = Counters(sample.success, sample.failure, golden_total, golden_failed)
    requests = external_total + golden_total
    error_rate = (external_failed + golden_failed) / requests if requests else None
    latency, source = None, ""
    if external_total > 0 and sample is not None and sample.p99_us is not None:
        latency, source = sample.p99_us / 1000.0, "triton"
    elif results:
        latency, source = p99([r.latency_ms for r in results]), "golden"
    accuracy = golden.score(cases, [r.output for r in results]) if scored and results else None
    return (
        Measurement(
            p99_latency_ms=latency,
            latency_source=source,
            error_rate=error_rate,
            requests=int(requests),
            accuracy=accuracy,
        ),
        kept,
    )
