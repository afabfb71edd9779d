"""The autoscaling chain's objects: the HPA's metrics and behaviour, and the prometheus-adapter
rules that serve those metrics from what dcgm-exporter and Triton export (pure).

The signal travels dcgm-exporter (per GPU) / Triton (per pod) -> Prometheus -> prometheus-adapter
(the custom metrics API, ``custom.metrics.k8s.io/v1beta1``) -> the HPA controller -> the serving
workload. The adapter rules here are the ones shipped (chart values, ``manifests/monitoring/``)
and the ones the end-to-end test runs, so the names the HPA asks for are the names served.

Label layouts of dcgm-exporter's per-pod series (``LABEL_LAYOUTS``):

* ``dcgm-exporter``: ``namespace``, ``pod``, ``container`` as dcgm-exporter writes them with
  ``--kubernetes`` (internal/pkg/transformation/kubernetes.go at 4.5.3-4.8.2), kept by a scrape
  with ``honor_labels: true``;
* ``gpu-operator``: behind the GPU Operator's ServiceMonitor (``honorLabels: false``) Prometheus
  renames them ``exported_namespace``, ``exported_pod`` (its own target labels win).

Triton's series carry the ``namespace``/``pod`` of the pod they were scraped from (a
PodMonitor or ``kubernetes_sd`` relabelling): Triton exports no such labels itself, so there is
nothing to rename.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from deepseek_operator.api.spec import AutoscalingSpec

LABEL_LAYOUTS = ("dcgm-exporter", "gpu-operator")

# What dcgm-exporter and Triton export (the series the rules read).
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # etc/default-counters.csv: "GPU utilization (in %)", gauge
TRITON_PENDING = "nv_inference_pending_request_count"  # per model: requests waiting (gauge)
TRITON_QUEUE_US = "nv_inference_queue_duration_us"  # per model: cumulative time in queue (counter)
TRITON_COMPUTE_US = "nv_inference_compute_infer_duration_us"  # per model: cumulative compute time


@dataclass(frozen=True)
class MetricNames:
    """The names the adapter serves and the HPA asks for: an operator setting (environment
    ``DSO_METRIC_GPU_UTILIZATION``, ``DSO_METRIC_QUEUE_PENDING``, ``DSO_METRIC_QUEUE_RATIO``; the
    chart's ``autoscaling.metricNames``). The defaults match the rules shipped."""

    gpu_utilization: str = DCGM_GPU_UTIL
    queue_pending: str = "triton_pending_requests"
    queue_ratio: str = "triton_queue_to_compute_ratio"

    def for_signal(self, signal: str) -> str:
        return self.queue_pending if signal == "pendingRequests" else self.queue_ratio


_ENV = {
    "gpu_utilization": "DSO_METRIC_GPU_UTILIZATION",
    "queue_pending": "DSO_METRIC_QUEUE_PENDING",
    "queue_ratio": "DSO_METRIC_QUEUE_RATIO",
}


def metric_names(environ: dict[str, str] | None = None) -> MetricNames:
    """The metric names set for this operator (defaults when unset)."""
    env = dict(os.environ) if environ is None else environ
    given = {field: env[var] for field, var in _ENV.items() if env.get(var)}
    return MetricNames(**given)


def _quantity(value: float) -> str:
    """A Kubernetes quantity for an HPA target: whole numbers as they are, else in milli-units."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def hpa_metrics(auto: AutoscalingSpec, names: MetricNames) -> list[dict[str, Any]]:
    """``spec.metrics``: GPU utilization as an average per pod, and the queue signal when asked."""

    def pods(metric: str, target: str) -> dict[str, Any]:
        return {
            "type": "Pods",
            "pods": {"metric": {"name": metric}, "target": {"type": "AverageValue", "averageValue": target}},
        }

    metrics = [pods(names.gpu_utilization, str(auto.target_gpu_utilization))]
    if auto.queue is not None:
        metrics.append(pods(names.for_signal(auto.queue.signal), _quantity(auto.queue.target)))
    return metrics


def hpa_behavior(auto: AutoscalingSpec) -> dict[str, Any]:
    """``spec.behavior``: scale down after the spec's stabilization window; scale up at once but at
    most ``scaleUpStep`` replicas per ``scaleUpPeriodSeconds``. The HPA's default (4 pods or 100 %
    every 15 s) suits pods that start in seconds; a GPU replica loads for minutes, its GPUs stay
    busy meanwhile, and the default would keep adding replicas for load that the loading ones are
    about to take."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": auto.scale_up_step, "periodSeconds": auto.scale_up_period_seconds}
            ],
        },
        "scaleDown": {"stabilizationWindowSeconds": auto.scale_down_stabilization_seconds},
    }


def _resources(namespace_label: str, pod_label: str) -> dict[str, Any]:
    return {"overrides": {namespace_label: {"resource": "namespace"}, pod_label: {"resource": "pod"}}}


def adapter_rules(
    layout: str = "dcgm-exporter", names: MetricNames | None = None, rate_window: str = "1m"
) -> dict[str, Any]:
    """prometheus-adapter's configuration (its ``--config`` file, the chart's ``rules.custom``):
    per-pod GPU utilization, Triton's pending requests and its queue-to-compute ratio.

    ``layout`` is one of LABEL_LAYOUTS; ``rate_window`` the window of the ratio's ``rate()`` (at
    least four scrape intervals). Rule syntax: prometheus-adapter docs/config.md (seriesQuery,
    resources.overrides, name.matches/as, metricsQuery with ``<<.Series>>``,
    ``<<.LabelMatchers>>``, ``<<.GroupBy>>``).
    """
    if layout not in LABEL_LAYOUTS:
        raise ValueError(f"label layout {layout!r}: use one of {', '.join(LABEL_LAYOUTS)}")
    names = names or MetricNames()
    ns_label, pod_label = (
        ("namespace", "pod") if layout == "dcgm-exporter" else ("exported_namespace", "exported_pod")
    )
    return {
        "rules": [
            {
                # One series per GPU; a pod's value is the average over the GPUs it holds.
                "seriesQuery": f'{DCGM_GPU_UTIL}{{{ns_label}!="",{pod_label}!=""}}',
                "resources": _resources(ns_label, pod_label),
                "name": {"matches": f"^{DCGM_GPU_UTIL}$", "as": names.gpu_utilization},
                "metricsQuery": "avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
            },
            {
                # Summed over the pod's models (the TensorRT-LLM ensemble and its steps).
                "seriesQuery": f'{TRITON_PENDING}{{namespace!="",pod!=""}}',
                "resources": _resources("namespace", "pod"),
                "name": {"matches": f"^{TRITON_PENDING}$", "as": names.queue_pending},
                "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
            },
            {
                # Time requests wait over time they compute; 0 when idle (the divisor is at least 1 us/s).
                "seriesQuery": f'{TRITON_QUEUE_US}{{namespace!="",pod!=""}}',
                "resources": _resources("namespace", "pod"),
                "name": {"matches": f"^{TRITON_QUEUE_US}$", "as": names.queue_ratio},
                "metricsQuery": (
                    f"sum(rate(<<.Series>>{{<<.LabelMatchers>>}}[{rate_window}])) by (<<.GroupBy>>)"
                    f" / clamp_min(sum(rate({TRITON_COMPUTE_US}{{<<.LabelMatchers>>}}[{rate_window}]))"
                    " by (<<.GroupBy>>), 1)"
                ),
            },
        ]
    }
