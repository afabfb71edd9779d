"""The operator's own metrics: the per-resource gauges read from the cache, the pass timer, and
that the label sets stay bounded (a deleted resource's series go; no label holds a revision)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from deepseek_operator import metrics
from deepseek_operator.errors import OperatorError, SpecError, TransientError

pytestmark = pytest.mark.unit


def _body(name: str, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "llm", "name": name},
        "spec": {"replicas": 2},
        "status": {"phase": phase, **status},
    }


def _pod(name: str, component: str = "serving") -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"app.kubernetes.io/component": component}}}


BODIES = [
    _body(
        "r1",
        "Ready",
        replicas=2,
        readyReplicas=2,
        analysis={
            "p99LatencyMs": 250.0,
            "errorRate": 0.01,
            "accuracy": 0.75,
            "baselineAccuracy": 1.0,
            "consecutiveFailures": 0,
            "lastRunTime": "2026-12-01T08:30:00.000Z",
        },
        lastRollback={"time": "2026-12-01T08:00:00.000Z", "reason": "p99 above"},
    ),
    _body(
        "r2",
        "Pending",
        conditions=[{"type": "Placed", "status": "False", "reason": "NoCapacity", "message": "..."}],
    ),
    _body("r3", "Degraded", replicas=2, readyReplicas=1),
]
PODS = {"r1": [_pod("r1-a"), _pod("r1-b"), _pod("r1-engine", "engine-build")], "r2": [], "r3": [_pod("r3-a")]}


def _registry(active: bool = True) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(metrics.ResourceCollector(lambda: BODIES, lambda ns, name: PODS[name], lambda: active))
    return reg


def test_resource_gauges_carry_the_status() -> None:
    reg = _registry()
    r1 = {"namespace": "llm", "name": "r1"}
    assert reg.get_sample_value("deepseek_operator_active") == 1
    assert reg.get_sample_value("deepseek_operator_resource_phase", {**r1, "phase": "Ready"}) == 1
    assert reg.get_sample_value("deepseek_operator_resource_phase", {**r1, "phase": "Pending"}) == 0
    assert reg.get_sample_value("deepseek_operator_resource_desired_replicas", r1) == 2
    assert reg.get_sample_value("deepseek_operator_resource_ready_replicas", r1) == 2
    assert reg.get_sample_value("deepseek_operator_analysis_p99_latency_seconds", r1) == 0.25
    assert reg.get_sample_value("deepseek_operator_analysis_error_rate", r1) == 0.01
    assert reg.get_sample_value("deepseek_operator_analysis_accuracy_score", r1) == 0.75
    assert reg.get_sample_value("deepseek_operator_analysis_baseline_score", r1) == 1.0
    assert reg.get_sample_value("deepseek_operator_analysis_last_run_timestamp_seconds", r1) == 1796113800.0
    assert reg.get_sample_value("deepseek_operator_last_rollback_timestamp_seconds", r1) == 1796112000.0
    # Only serving pods join dcgm-exporter's series to the deployment.
    assert reg.get_sample_value("deepseek_operator_serving_pod_info", {**r1, "pod": "r1-a"}) == 1
    assert reg.get_sample_value("deepseek_operator_serving_pod_info", {**r1, "pod": "r1-engine"}) is None
    r2 = {"namespace": "llm", "name": "r2"}
    assert reg.get_sample_value("deepseek_operator_placement_refused", {**r2, "reason": "NoCapacity"}) == 1
    assert reg.get_sample_value("deepseek_operator_placement_refused", {**r1, "reason": "NoCapacity"}) is None
    assert (
        reg.get_sample_value("deepseek_operator_analysis_p99_latency_seconds", r2) is None
    )  # never analysed
    assert reg.get_sample_value("deepseek_operator_resources", {"phase": "Degraded"}) == 1
    assert reg.get_sample_value("deepseek_operator_resources", {"phase": "Failed"}) == 0  # every phase, 0 too


def test_a_waiting_replica_reports_no_resource() -> None:
    reg = _registry(active=False)
    assert reg.get_sample_value("deepseek_operator_active") == 0
    assert (
        reg.get_sample_value(
            "deepseek_operator_resource_phase", {"namespace": "llm", "name": "r1", "phase": "Ready"}
        )
        is None
    )
    assert reg.get_sample_value("deepseek_operator_resources", {"phase": "Ready"}) == 0


def test_a_deleted_resource_leaves_no_series() -> None:
    metrics.record("analyses", ("gone-ns", "gone", "Fail", "canary"))
    metrics.record("rollbacks", ("gone-ns", "gone", "latency", "canary"))
    metrics.record("drift_to_rollback", ("gone-ns", "gone"), 4.0)
    metrics.record("placement_refusals", ("gone-ns", "gone", "NoCapacity"))
    metrics.record("promotions", ("kept-ns", "kept"))
    labels = {"namespace": "gone-ns", "name": "gone"}
    assert (
        REGISTRY.get_sample_value(
            "deepseek_operator_analyses_total", {**labels, "verdict": "Fail", "role": "canary"}
        )
        == 1
    )
    assert REGISTRY.get_sample_value("deepseek_operator_drift_to_rollback_seconds_count", labels) == 1
    metrics.forget("gone-ns", "gone")
    for family in REGISTRY.collect():
        for sample in family.samples:
            assert sample.labels.get("name") != "gone", sample
    assert (
        REGISTRY.get_sample_value(
            "deepseek_operator_promotions_total", {"namespace": "kept-ns", "name": "kept"}
        )
        == 1
    )
    metrics.forget("kept-ns", "kept")


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (None, "ok"),
        (TransientError("conflict"), "transient"),
        (SpecError("bad"), "error"),
        (OperatorError("no"), "error"),
        (RuntimeError("bug"), "internal"),
    ],
)
def test_pass_result(error: BaseException | None, result: str) -> None:
    assert metrics.pass_result(error) == result


def test_timed_pass_counts_and_lets_the_error_through() -> None:
    before = REGISTRY.get_sample_value("deepseek_operator_reconciles_total", {"result": "transient"}) or 0
    timed = (
        REGISTRY.get_sample_value(
            "deepseek_operator_reconcile_duration_seconds_count", {"result": "transient"}
        )
        or 0
    )
    with pytest.raises(TransientError), metrics.timed_pass():
        raise TransientError("HTTP 409")
    assert (
        REGISTRY.get_sample_value("deepseek_operator_reconciles_total", {"result": "transient"}) == before + 1
    )
    assert (
        REGISTRY.get_sample_value(
            "deepseek_operator_reconcile_duration_seconds_count", {"result": "transient"}
        )
        == timed + 1
    )


def test_no_label_can_grow_without_bound() -> None:
    """Closed label sets only: no revision hash, message or time in a label of any operator metric."""
    reg = _registry()
    names: set[str] = set()
    for registry in (REGISTRY, reg):
        for family in registry.collect():
            if family.name.startswith("deepseek_operator_"):
                for sample in family.samples:
                    names |= set(sample.labels)
    for metric in (metrics.ANALYSES, metrics.ROLLBACKS, metrics.PLACEMENT_REFUSALS, metrics.API_ERRORS):
        names |= set(metric._labelnames)
    assert names <= {
        "namespace",
        "name",
        "pod",
        "verdict",
        "role",
        "reason",
        "phase",
        "result",
        "code",
        "method",
        "le",
    }
    assert "revision" not in names


def test_install_replaces_the_previous_collector() -> None:
    first = metrics.ResourceCollector(lambda: BODIES, lambda ns, name: PODS[name], lambda: True)
    second = metrics.ResourceCollector(lambda: BODIES[:1], lambda ns, name: PODS[name], lambda: True)
    try:
        metrics.install(first)
        metrics.install(second)  # no "Duplicated timeseries" error: the first is gone
        assert REGISTRY.get_sample_value("deepseek_operator_resources", {"phase": "Pending"}) == 0
        assert REGISTRY.get_sample_value("deepseek_operator_resources", {"phase": "Ready"}) == 1
    finally:
        metrics.install(None)
    assert REGISTRY.get_sample_value("deepseek_operator_active") is None


def test_api_errors_by_code_and_method() -> None:
    labels = {"code": "409", "method": "PATCH"}
    before = REGISTRY.get_sample_value("deepseek_operator_api_errors_total", labels) or 0
    metrics.api_error(409, "patch")
    assert REGISTRY.get_sample_value("deepseek_operator_api_errors_total", labels) == before + 1
    metrics.api_error(None, "GET")  # no status at all (a dropped connection): code "0"
    assert REGISTRY.get_sample_value("deepseek_operator_api_errors_total", {"code": "0", "method": "GET"})
