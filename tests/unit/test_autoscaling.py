"""The autoscaling chain's pure parts: spec fields, the HPA's metrics and behaviour, the adapter
rules for both label layouts, and the Autoscaling condition naming the missing hop."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator.api.spec import parse_spec
from deepseek_operator.builders import autoscaling as a
from deepseek_operator.builders.serving import build_hpa
from deepseek_operator.errors import SpecError
from deepseek_operator.reconcile import autoscale

MINIMAL: dict[str, Any] = {
    "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "source": {"uri": "s3://b/p"}}
}
OWNER = {"metadata": {"name": "r1", "namespace": "llm", "uid": "u-1"}}


def _auto(**auto: Any) -> Any:
    spec = parse_spec({**MINIMAL, "autoscaling": auto})
    assert spec.autoscaling is not None
    return spec.autoscaling


def test_scale_up_defaults_and_the_queue_signal_parse() -> None:
    auto = _auto()
    assert (auto.scale_up_step, auto.scale_up_period_seconds, auto.queue) == (2, 180, None)
    assert _auto(queue={}).queue.target == 4.0  # pendingRequests by default
    q = _auto(queue={"signal": "queueToComputeRatio"}).queue
    assert (q.signal, q.target) == ("queueToComputeRatio", 0.5)
    with pytest.raises(SpecError, match=r"spec\.autoscaling\.queue\.target: must be a number"):
        _auto(queue={"target": "lots"})
    with pytest.raises(SpecError, match=r"spec\.autoscaling\.queue\.target: 0 is out of range"):
        _auto(queue={"target": 0})
    with pytest.raises(SpecError, match=r"spec\.autoscaling\.queue\.signal"):
        _auto(queue={"signal": "latency"})


def test_the_hpa_averages_gpu_utilization_and_the_queue_per_pod() -> None:
    auto = _auto(targetGPUUtilization=65, queue={"signal": "queueToComputeRatio", "target": 0.25})
    assert a.hpa_metrics(auto, a.MetricNames()) == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "DCGM_FI_DEV_GPU_UTIL"},
                "target": {"type": "AverageValue", "averageValue": "65"},
            },
        },
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "triton_queue_to_compute_ratio"},
                "target": {"type": "AverageValue", "averageValue": "250m"},
            },
        },
    ]
    pending = a.hpa_metrics(_auto(queue={"target": 3}), a.MetricNames())[1]["pods"]
    assert pending["metric"]["name"] == "triton_pending_requests" and pending["target"]["averageValue"] == "3"


def test_scale_up_is_bounded_per_period_and_scale_down_waits_the_window() -> None:
    behavior = a.hpa_behavior(
        _auto(scaleUpStep=1, scaleUpPeriodSeconds=240, scaleDownStabilizationSeconds=30)
    )
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 240}]
    assert behavior["scaleDown"] == {"stabilizationWindowSeconds": 30}


def test_metric_names_are_an_operator_setting() -> None:
    assert a.metric_names({}) == a.MetricNames()
    names = a.metric_names({"DSO_METRIC_GPU_UTILIZATION": "gpu_util", "DSO_METRIC_QUEUE_PENDING": ""})
    assert names.gpu_utilization == "gpu_util" and names.queue_pending == "triton_pending_requests"
    spec = parse_spec({**MINIMAL, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}})
    hpa = build_hpa(OWNER, spec, "r1-abc", metric_names=names)
    assert hpa is not None
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "gpu_util"
    lws = build_hpa(OWNER, spec, "r1-abc", workload_kind="LeaderWorkerSet")
    assert lws is not None and lws["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"


@pytest.mark.parametrize(
    ("layout", "ns_label", "pod_label"),
    [("dcgm-exporter", "namespace", "pod"), ("gpu-operator", "exported_namespace", "exported_pod")],
)
def test_adapter_rules_match_dcgm_exporters_labels_in_each_layout(
    layout: str, ns_label: str, pod_label: str
) -> None:
    gpu, pending, ratio = a.adapter_rules(layout)["rules"]
    assert gpu["seriesQuery"] == f'DCGM_FI_DEV_GPU_UTIL{{{ns_label}!="",{pod_label}!=""}}'
    assert gpu["resources"]["overrides"] == {
        ns_label: {"resource": "namespace"},
        pod_label: {"resource": "pod"},
    }
    assert gpu["name"]["as"] == "DCGM_FI_DEV_GPU_UTIL"
    assert gpu["metricsQuery"].startswith("avg(<<.Series>>")
    # Triton's series carry the scrape's own namespace/pod in both layouts.
    assert pending["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert pending["name"]["as"] == "triton_pending_requests"
    assert "nv_inference_compute_infer_duration_us" in ratio["metricsQuery"]
    assert ratio["name"]["as"] == "triton_queue_to_compute_ratio"


def test_an_unknown_layout_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="dcgm-exporter, gpu-operator"):
        a.adapter_rules("kube-prometheus")


def _hpa(
    active: tuple[str, str, str] | None, limited: bool = False, current: str | None = "45"
) -> dict[str, Any]:
    conds = []
    if active is not None:
        conds.append(
            {"type": "ScalingActive", "status": active[0], "reason": active[1], "message": active[2]}
        )
    if limited:
        conds.append(
            {"type": "ScalingLimited", "status": "True", "reason": "TooManyReplicas", "message": "max 3"}
        )
    metrics = []
    if current is not None:
        metrics = [
            {
                "type": "Pods",
                "pods": {"metric": {"name": "DCGM_FI_DEV_GPU_UTIL"}, "current": {"averageValue": current}},
            }
        ]
    return {
        "status": {"currentReplicas": 2, "desiredReplicas": 3, "conditions": conds, "currentMetrics": metrics}
    }


READY = {"metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
STARTING = {"metadata": {"name": "q"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
UP = {"status": {"conditions": [{"type": "Available", "status": "True"}]}}
DOWN = {
    "status": {
        "conditions": [
            {
                "type": "Available",
                "status": "False",
                "reason": "FailedDiscoveryCheck",
                "message": "failing or missing response from https://localhost:4443",
            }
        ]
    }
}
U = "MetricsUnavailable"
NOT_FOUND = (
    "False",
    "FailedGetPodsMetric",
    "the HPA was unable to compute the replica count: unable to get metric DCGM_FI_DEV_GPU_UTIL: "
    "unable to fetch metrics from custom metrics API: the server could not find the metric "
    "DCGM_FI_DEV_GPU_UTIL for pods",
)
NO_ANSWER = (
    "False",
    "FailedGetPodsMetric",
    "the HPA was unable to compute the replica count: unable to get metric DCGM_FI_DEV_GPU_UTIL: "
    "unable to fetch metrics from custom metrics API: the server is currently unable to handle the "
    "request (get pods.custom...)",
)
ACTIVE = ("True", "ValidMetricFound", "the HPA was able to successfully calculate a replica count")


@pytest.mark.parametrize(
    ("api_service", "hpa", "pods", "status", "reason", "says"),
    [
        ({}, _hpa(ACTIVE), [READY], "False", U, "no APIService v1beta1.custom.metrics.k8s.io"),
        (DOWN, _hpa(ACTIVE), [READY], "False", U, "is not Available (failing or missing"),
        (UP, None, [READY], "Unknown", "HPAPending", "being created"),
        (UP, _hpa(ACTIVE), [STARTING], "False", U, "no serving pod is Running and Ready"),
        (UP, _hpa(None), [READY], "Unknown", "Waiting", "not evaluated"),
        (UP, _hpa(NOT_FOUND), [READY], "False", U, "serves no DCGM_FI_DEV_GPU_UTIL for these pods"),
        (None, _hpa(NO_ANSWER), [READY], "False", U, "does not answer"),
        (UP, _hpa(ACTIVE), [READY], "True", "Active", "DCGM_FI_DEV_GPU_UTIL 45/70; 2 replica(s)"),
        (None, _hpa(ACTIVE, limited=True), [READY], "True", "Active", "(limited: max 3)"),
        (UP, _hpa(ACTIVE, current=None), [READY], "True", "Active", "DCGM_FI_DEV_GPU_UTIL <unknown>/70"),
        (UP, _hpa(("False", "ScalingDisabled", "scaling is disabled")), [READY], "False",
         "ScalingDisabled", "scaling is disabled"),
    ],
)  # fmt: skip
def test_the_condition_names_the_first_missing_hop(
    api_service: Any, hpa: Any, pods: list[Any], status: str, reason: str, says: str
) -> None:
    cond = autoscale.autoscaling_condition(_auto(), a.MetricNames(), "llm", hpa, api_service, pods)
    assert (cond.type, cond.status, cond.reason) == ("Autoscaling", status, reason)
    assert says in cond.message
    if reason == "MetricsUnavailable" and "Ready" not in says:
        assert "kubectl get --raw /apis/custom.metrics.k8s.io/v1beta1/namespaces/llm/pods/*/" in cond.message


def test_status_shows_the_hpas_counts_and_each_metric_against_its_target() -> None:
    auto = _auto(queue={"target": 2})
    fields = autoscale.autoscaling_fields(auto, a.MetricNames(), _hpa(ACTIVE))
    assert fields == {
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "metrics": [
            {"name": "DCGM_FI_DEV_GPU_UTIL", "target": "70", "current": "45"},
            {"name": "triton_pending_requests", "target": "2"},  # not known yet: no current
        ],
    }
    assert autoscale.autoscaling_fields(auto, a.MetricNames(), None)["metrics"][0] == {
        "name": "DCGM_FI_DEV_GPU_UTIL",
        "target": "70",
    }


def test_each_pass_reports_the_hpa_and_the_condition_goes_with_autoscaling() -> None:
    from deepseek_operator.api import names  # noqa: PLC0415
    from tests.support.world import World, sample  # noqa: PLC0415

    body = sample()
    body["spec"].pop("replicas", None)
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    w = World(body, metrics_api={})
    w.converge()

    def cond() -> dict[str, Any]:
        return next(c for c in w.body["status"]["conditions"] if c["type"] == "Autoscaling")

    assert cond()["reason"] == "MetricsUnavailable" and "no APIService" in cond()["message"]
    hpa = ("HorizontalPodAutoscaler", names.serving_name(str(body["metadata"]["name"])))
    assert hpa in w.children
    w.children[hpa]["status"] = _hpa(ACTIVE)["status"]  # the HPA controller's status
    w.metrics_api = UP
    w.converge()
    assert cond()["status"] == "True" and "45/70" in cond()["message"]
    assert w.body["status"]["autoscaling"]["currentReplicas"] == 2
    assert w.converge().empty()  # nothing new: nothing written
    # Autoscaling off: the condition and status.autoscaling go.
    w.body["spec"].pop("autoscaling")
    w.body["spec"]["replicas"] = 1
    w.body["metadata"]["generation"] = w.body["metadata"].get("generation", 1) + 1
    w.converge()
    assert "Autoscaling" not in {c["type"] for c in w.body["status"]["conditions"]}
    assert not w.body["status"].get("autoscaling")
