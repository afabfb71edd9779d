"""The autoscaling status step (pure): ``status.autoscaling`` and the ``Autoscaling`` condition, from
the HPA's status, the custom metrics APIService and the serving pods.

The signal reaches the HPA through several hops (exporter -> Prometheus -> prometheus-adapter ->
the ``custom.metrics.k8s.io`` APIService -> the HPA controller); when one is missing the HPA shows
``<unknown>`` and says little. The condition names the first missing hop, in the order a user
checks them:

1. the APIService ``v1beta1.custom.metrics.k8s.io`` is absent (nothing serves the API);
2. it is there but not ``Available`` (the adapter is down or unreachable);
3. no serving pod is Running and Ready (the HPA reads ready pods only);
4. the HPA cannot get a metric for these pods (the adapter has no rule for it, its labels do not
   match, or Prometheus has no series: the HPA's ``ScalingActive`` condition says which metric);
5. otherwise the HPA is active: its current values against their targets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from deepseek_operator import status as st
from deepseek_operator.api.spec import AutoscalingSpec
from deepseek_operator.api.types import ConditionType
from deepseek_operator.builders.autoscaling import MetricNames, hpa_metrics

METRICS_API_SERVICE = "v1beta1.custom.metrics.k8s.io"
UNAVAILABLE = "MetricsUnavailable"
_HOW_TO_CHECK = (
    "check: kubectl get apiservice " + METRICS_API_SERVICE + "; kubectl get --raw "
    "/apis/custom.metrics.k8s.io/v1beta1/namespaces/{ns}/pods/*/{metric}"
)
_METRIC_IN_MESSAGE = re.compile(r"unable to get metric ([A-Za-z_:][A-Za-z0-9_:]*)")


def _conditions(obj: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def _current_values(hpa: Mapping[str, Any]) -> dict[str, str]:
    """metric name -> current average per pod, from the HPA's ``status.currentMetrics``."""
    out: dict[str, str] = {}
    for m in (hpa.get("status") or {}).get("currentMetrics") or []:
        pods = m.get("pods") or {}
        name = (pods.get("metric") or {}).get("name")
        value = (pods.get("current") or {}).get("averageValue")
        if name and value is not None:
            out[str(name)] = str(value)
    return out


def autoscaling_fields(
    auto: AutoscalingSpec, names: MetricNames, hpa: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``status.autoscaling``: the HPA's replica counts and each metric's current value and target."""
    targets = [
        (m["pods"]["metric"]["name"], m["pods"]["target"]["averageValue"]) for m in hpa_metrics(auto, names)
    ]
    hstatus = (hpa or {}).get("status") or {}
    current = _current_values(hpa or {})
    metrics = []
    for name, target in targets:
        entry = {"name": name, "target": target}
        if name in current:
            entry["current"] = current[name]
        metrics.append(entry)
    out: dict[str, Any] = {"metrics": metrics}
    for key in ("currentReplicas", "desiredReplicas", "lastScaleTime"):
        if hstatus.get(key) is not None:
            out[key] = hstatus[key]
    return out


def _ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _api_service_condition(
    metrics_api: Mapping[str, Any] | None, gpu: str, check: str
) -> st.Condition | None:
    """Hops 1 and 2: the APIService absent, or not Available (None: nothing to say)."""
    if metrics_api is None:
        return None
    if not metrics_api:
        return st.Condition(
            ConditionType.AUTOSCALING,
            "False",
            UNAVAILABLE,
            f"no APIService {METRICS_API_SERVICE}: nothing serves the custom metrics API the HPA reads "
            f"{gpu} from; install prometheus-adapter with the rules in manifests/monitoring/ ({check})",
        )
    available = _conditions(metrics_api).get("Available") or {}
    if available.get("status") == "True":
        return None
    why = available.get("message") or available.get("reason") or "no Available condition yet"
    return st.Condition(
        ConditionType.AUTOSCALING,
        "False",
        UNAVAILABLE,
        f"APIService {METRICS_API_SERVICE} is not Available ({why}): prometheus-adapter is down "
        f"or unreachable; check its pods and logs ({check})",
    )


def _metric_failure(active: Mapping[str, Any], gpu: str, namespace: str) -> st.Condition:
    """Hop 4: the HPA could not get a metric; which one, and what the HPA said."""
    message = str(active.get("message") or "")
    found = _METRIC_IN_MESSAGE.search(message)
    metric = found.group(1).rstrip(":") if found else gpu  # the HPA writes "metric NAME: why"
    if "unable to handle the request" in message:
        hop = "the custom metrics API does not answer (prometheus-adapter down?)"
    else:
        hop = (
            f"the custom metrics API serves no {metric} for these pods (no adapter rule for it, "
            "labels that do not match the rule, or no series in Prometheus)"
        )
    return st.Condition(
        ConditionType.AUTOSCALING,
        "False",
        UNAVAILABLE,
        f"{hop}; the HPA says: {message} ({_HOW_TO_CHECK.format(ns=namespace, metric=metric)})",
    )


_METRIC_FAILURES = ("FailedGetPodsMetric", "FailedGetObjectMetric", "FailedGetExternalMetric")


def autoscaling_condition(
    auto: AutoscalingSpec,
    names: MetricNames,
    namespace: str,
    hpa: Mapping[str, Any] | None,
    metrics_api: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> st.Condition:
    """The ``Autoscaling`` condition. ``metrics_api``: the APIService as watched, ``{}`` when there
    is none, None when unknown (not watched: then the HPA's own conditions speak for that hop)."""
    gpu = names.gpu_utilization
    kind = ConditionType.AUTOSCALING
    missing = _api_service_condition(metrics_api, gpu, _HOW_TO_CHECK.format(ns=namespace, metric=gpu))
    if missing is not None:
        return missing
    if hpa is None:
        return st.Condition(kind, "Unknown", "HPAPending", "the HorizontalPodAutoscaler is being created")
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if live and not any(_ready(p) for p in live):
        return st.Condition(
            kind,
            "False",
            UNAVAILABLE,
            f"no serving pod is Running and Ready (0/{len(live)}): the HPA reads the metrics of ready "
            "pods only",
        )
    hconds = _conditions(hpa)
    active = hconds.get("ScalingActive")
    if active is None:
        return st.Condition(kind, "Unknown", "Waiting", "the HPA controller has not evaluated the HPA yet")
    if active.get("status") != "True":
        if str(active.get("reason")) in _METRIC_FAILURES:
            return _metric_failure(active, gpu, namespace)
        return st.Condition(
            kind, "False", str(active.get("reason") or "ScalingInactive"), str(active.get("message") or "")
        )
    fields = autoscaling_fields(auto, names, hpa)
    values = ", ".join(
        f"{m['name']} {m.get('current', '<unknown>')}/{m['target']}" for m in fields["metrics"]
    )
    message = (
        f"{values}; {fields.get('currentReplicas', '?')} replica(s), the HPA wants "
        f"{fields.get('desiredReplicas', '?')}"
    )
    limited = hconds.get("ScalingLimited") or {}
    if limited.get("status") == "True":
        message += f" (limited: {limited.get('message') or limited.get('reason')})"
    return st.Condition(kind, "True", "Active", message)
