"""The figures of one analysis from Triton's counters and the golden-set results (pure part)."""

from __future__ import annotations

import pytest

from deepseek_operator.rollout import figures as an
from deepseek_operator.rollout.golden import GoldenCase
from deepseek_operator.rollout.probe import CaseResult, MetricsSample

CASES = (
    GoldenCase("17 * 23?", "contains", "391", 16),
    GoldenCase("Capital of France?", "regex", "(?i)paris", 16),
)


def ok(text: str, ms: float) -> CaseResult:
    return CaseResult(output=text, latency_ms=ms, error=None)


def failed(ms: float) -> CaseResult:
    return CaseResult(output=None, latency_ms=ms, error="HTTP 500: injected")


def test_without_traffic_latency_comes_from_the_golden_requests() -> None:
    previous = an.Counters(success=10, failure=0, golden_total=2, golden_failed=0)
    sample = MetricsSample(success=12, failure=0, p99_us=900_000.0, pods=1)  # only our own 2 requests
    m, kept = an.combine(sample, previous, [ok("391", 40), ok("Paris", 120)], True, CASES)
    assert (m.latency_source, m.p99_latency_ms) == ("golden", 120)
    assert (m.error_rate, m.requests, m.accuracy) == (0.0, 2, 1.0)
    assert kept == an.Counters(12, 0, 2, 0)


def test_with_traffic_latency_comes_from_tritons_summaries_and_errors_from_its_counters() -> None:
    previous = an.Counters(success=100, failure=0, golden_total=2, golden_failed=0)
    # 2 of ours + 98 others since the last analysis, 10 of them failed.
    sample = MetricsSample(success=190, failure=10, p99_us=812_000.0, pods=2)
    m, _ = an.combine(sample, previous, [ok("391", 40), ok("nope", 50)], True, CASES)
    assert (m.latency_source, m.p99_latency_ms) == ("triton", 812.0)
    assert m.requests == 98 + 2
    assert m.error_rate == pytest.approx(10 / 100)
    assert m.accuracy == 0.5


def test_golden_failures_count_now_and_are_not_counted_twice_later() -> None:
    first, kept = an.combine(MetricsSample(0, 0, None, 1), None, [failed(5), ok("Paris", 5)], True, CASES)
    assert first.error_rate == 0.5 and first.accuracy == 0.5
    assert kept is not None
    # Next time Triton's counters show that one failure and one success: they were ours.
    second, _ = an.combine(MetricsSample(1, 1, None, 1), kept, [ok("391", 5), ok("Paris", 5)], True, CASES)
    assert second.error_rate == 0.0 and second.requests == 2


def test_a_pod_restart_resets_the_counters_without_negative_figures() -> None:
    previous = an.Counters(success=500, failure=20, golden_total=2, golden_failed=0)
    m, kept = an.combine(MetricsSample(3, 0, None, 1), previous, [ok("391", 5)], True, CASES[:1])
    assert m.error_rate == 0.0 and m.requests >= 1
    assert kept == an.Counters(3, 0, 1, 0)


def test_unscored_smoke_request_gives_latency_and_errors_but_no_accuracy() -> None:
    m, kept = an.combine(None, None, [ok("OK", 33)], False, (an.SMOKE_CASE,))
    assert (m.p99_latency_ms, m.error_rate, m.accuracy) == (33, 0.0, None)
    assert kept is None  # no metrics endpoint: nothing to diff next time


def test_p99_nearest_rank() -> None:
    assert an.p99([]) is None
    assert an.p99([5.0]) == 5.0
    assert an.p99([float(i) for i in range(1, 101)]) == 99.0
    assert an.p99([1.0, 2.0, 300.0]) == 300.0


def test_model_and_inputs_per_runtime() -> None:
    assert an.model_inputs("tensorrt-llm") == ("ensemble", "max_tokens")
    assert an.model_inputs("pytorch") == ("tensorrt_llm", "sampling_param_max_tokens")


def _pod(name: str, waiting: str | None, init: bool = False) -> dict[str, object]:
    state = {"waiting": {"reason": waiting, "message": "back-off 40s"}} if waiting else {"running": {}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {
        "metadata": {"name": name},
        "status": {key: [{"name": "triton", "restartCount": 4, "state": state}]},
    }


def test_startup_failures_are_read_from_container_statuses() -> None:
    assert an.startup_failure([_pod("a", None), _pod("b", "ContainerCreating")]) is None
    found = an.startup_failure([_pod("a", None), _pod("b", "CrashLoopBackOff")])
    assert found == "pod b container triton is in CrashLoopBackOff (restarts 4): back-off 40s"
    assert an.startup_failure([_pod("c", "ImagePullBackOff", init=True)]) is not None


def test_a_startup_failure_fails_the_analysis() -> None:
    from deepseek_operator.rollout.decisions import Measurement, Thresholds, evaluate  # noqa: PLC0415

    verdict, reasons = evaluate(
        Measurement(startup_failure="pod b container triton is in CrashLoopBackOff"), Thresholds()
    )
    assert verdict == "Fail" and reasons[0].startswith("pods not starting: pod b")
