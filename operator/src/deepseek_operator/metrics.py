"""The operator's own Prometheus metrics (served by ``deepseek-operator run --metrics-port``).

Two kinds, listed in docs/observability.md:

* events the loop counts as they happen (analyses, rollbacks, promotions, placement refusals,
  passes, API errors): counters and histograms moved by the write step and the client;
* the state of every resource the operator knows (phase, replicas, the last analysis, the pods
  that serve it): read from the watch cache when Prometheus scrapes (:class:`ResourceCollector`),
  so a deleted resource's series are gone at the next scrape and nothing is stale.

Cardinality stays bounded by what exists: no label holds a revision hash, a message or a time;
``verdict``, ``role``, ``reason``, ``phase``, ``result``, ``code`` and ``method`` are closed sets;
``namespace``/``name`` (and ``pod`` on the pod gauge) name live objects only, because the
series of a resource are removed when the operator sees it deleted (:func:`forget`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from deepseek_operator.api.clock import parse_time
from deepseek_operator.api.types import Phase
from deepseek_operator.errors import OperatorError, TransientError

ANALYSES = Counter(
    "deepseek_operator_analyses",
    "Rollout analyses run, by verdict (Pass, Fail, Inconclusive) and role (canary, stable)",
    ["namespace", "name", "verdict", "role"],
)
ROLLBACKS = Counter(
    "deepseek_operator_rollbacks",
    "Automatic rollbacks, by reason (latency, error-rate, accuracy, startup) and role of the revision",
    ["namespace", "name", "reason", "role"],
)
PROMOTIONS = Counter(
    "deepseek_operator_promotions",
    "Canaries promoted to serve all traffic",
    ["namespace", "name"],
)
DRIFT_TO_ROLLBACK = Histogram(
    "deepseek_operator_drift_to_rollback_seconds",
    "Seconds from the first failing analysis of a streak (the drift seen) to the rollback applied",
    ["namespace", "name"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
PLACEMENT_REFUSALS = Counter(
    "deepseek_operator_placement_refusals",
    "Placements refused, by reason (NoGPUNodes, UnsupportedModel, UnsupportedGPU, NoGPUFits, NoCapacity)",
    ["namespace", "name", "reason"],
)
RECONCILES = Counter(
    "deepseek_operator_reconciles",
    "Passes of the loop, by result (ok; transient: a conflict or a busy API server, retried; "
    "error: said in a ReconcileError event; internal: a bug, logged with its traceback)",
    ["result"],
)
RECONCILE_DURATION = Histogram(
    "deepseek_operator_reconcile_duration_seconds",
    "Seconds one pass of the loop took (gather, decide, write), by result",
    ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_ERRORS = Counter(
    "deepseek_operator_api_errors",
    "Kubernetes API requests answered with an error status, by HTTP code and method "
    "(a 404 on a read is often expected: the object does not exist yet)",
    ["code", "method"],
)

# What a MetricOp (reconcile.facts) names -> the metric and how it moves.
_OPS: dict[str, tuple[Counter | Histogram, str]] = {
    "analyses": (ANALYSES, "inc"),
    "rollbacks": (ROLLBACKS, "inc"),
    "promotions": (PROMOTIONS, "inc"),
    "drift_to_rollback": (DRIFT_TO_ROLLBACK, "observe"),
    "placement_refusals": (PLACEMENT_REFUSALS, "inc"),
}
_SEEN_LOCK = threading.Lock()
# (namespace, name) -> the label sets moved for that resource, so forget() can remove them.
_SEEN: dict[tuple[str, str], set[tuple[str, tuple[str, ...]]]] = {}


def record(name: str, labels: tuple[str, ...], value: float = 1.0) -> None:
    """Move the metric a MetricOp names; the first two labels are the resource's namespace and name."""
    metric, how = _OPS[name]
    child = metric.labels(*labels)
    if how == "inc":
        child.inc(value)  # type: ignore[union-attr]
    else:
        child.observe(value)  # type: ignore[union-attr]
    with _SEEN_LOCK:
        _SEEN.setdefault((labels[0], labels[1]), set()).add((name, labels))


def forget(namespace: str, name: str) -> None:
    """Remove every series of the resource ``namespace/name`` (it was deleted)."""
    with _SEEN_LOCK:
        seen = _SEEN.pop((namespace, name), set())
    for op, labels in seen:
        with contextlib.suppress(KeyError):
            _OPS[op][0].remove(*labels)


def api_error(code: int | None, method: str) -> None:
    """Count one API request answered with an error status."""
    API_ERRORS.labels(str(code or 0), method.upper()).inc()


def pass_result(error: BaseException | None) -> str:
    """The ``result`` label of a pass that raised ``error`` (None: it did not)."""
    if error is None:
        return "ok"
    if isinstance(error, TransientError):
        return "transient"
    if isinstance(error, OperatorError):
        return "error"
    return "internal"


@contextlib.contextmanager
def timed_pass() -> Iterator[None]:
    """Count and time the pass run inside; the exception it raises (if any) passes through."""
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        yield
    except BaseException as e:
        error = e
        raise
    finally:
        result = pass_result(error)
        RECONCILES.labels(result).inc()
        RECONCILE_DURATION.labels(result).observe(time.perf_counter() - start)


# --- the state of every resource, read at scrape time -------------------------------------------

PHASES = tuple(Phase)
SERVING_COMPONENT = "serving"
_COMPONENT_LABEL = "app.kubernetes.io/component"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _timestamp(value: Any) -> float | None:
    when = parse_time(value) if isinstance(value, str) else None
    return None if when is None else when.timestamp()


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


class _Families:
    """The gauge families one scrape fills."""

    def __init__(self) -> None:
        key = ["namespace", "name"]
        g = GaugeMetricFamily
        self.active = g("deepseek_operator_active", "1 when this replica of the operator works (peering)")
        self.resources = g("deepseek_operator_resources", "DeepSeekDeployments by phase", labels=["phase"])
        self.phase = g(
            "deepseek_operator_resource_phase",
            "1 for the current phase of each DeepSeekDeployment, 0 for the others",
            labels=[*key, "phase"],
        )
        self.desired = g("deepseek_operator_resource_desired_replicas", "spec.replicas", labels=key)
        self.replicas = g("deepseek_operator_resource_replicas", "status.replicas (pods)", labels=key)
        self.ready = g("deepseek_operator_resource_ready_replicas", "status.readyReplicas", labels=key)
        self.refused = g(
            "deepseek_operator_placement_refused",
            "1 while the Placed condition is False, by its reason",
            labels=[*key, "reason"],
        )
        self.rollback_time = g(
            "deepseek_operator_last_rollback_timestamp_seconds",
            "When the last automatic rollback was applied (status.lastRollback.time), Unix seconds",
            labels=key,
        )

        def an(suffix: str, doc: str) -> GaugeMetricFamily:
            return g(f"deepseek_operator_analysis_{suffix}", doc, labels=key)

        self.p99 = an("p99_latency_seconds", "p99 latency of the last analysis")
        self.error_rate = an("error_rate", "error rate (0-1) of the last analysis")
        self.score = an("accuracy_score", "golden-set score (0-1) of the last analysis")
        self.baseline = an("baseline_score", "golden-set score the last analysis compared with")
        self.failures = an("consecutive_failures", "failing analyses in a row (last analysis)")
        self.last_run = an("last_run_timestamp_seconds", "when the last analysis ran, Unix seconds")
        self.pod = g(
            "deepseek_operator_serving_pod_info",
            "1 for each serving pod of a DeepSeekDeployment: joins pod-level series (dcgm-exporter's "
            "namespace/pod) to the deployment name",
            labels=[*key, "pod"],
        )

    def all(self) -> list[GaugeMetricFamily]:
        return list(vars(self).values())


def _add_analysis(f: _Families, key: list[str], analysis: Mapping[str, Any]) -> None:
    if (p99 := _number(analysis.get("p99LatencyMs"))) is not None:
        f.p99.add_metric(key, p99 / 1000.0)
    for family, field in (
        (f.error_rate, "errorRate"),
        (f.score, "accuracy"),
        (f.baseline, "baselineAccuracy"),
        (f.failures, "consecutiveFailures"),
    ):
        if (v := _number(analysis.get(field))) is not None:
            family.add_metric(key, v)
    if (t := _timestamp(analysis.get("lastRunTime"))) is not None:
        f.last_run.add_metric(key, t)


def _add_resource(f: _Families, body: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> str:
    meta = body.get("metadata") or {}
    key = [str(meta.get("namespace") or ""), str(meta.get("name") or "")]
    status = body.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    for each in PHASES:  # every phase, 1 for the current one (as kube-state-metrics does for pods)
        f.phase.add_metric([*key, each], 1 if each == phase else 0)
    for family, value in (
        (f.desired, (body.get("spec") or {}).get("replicas")),
        (f.replicas, status.get("replicas")),
        (f.ready, status.get("readyReplicas")),
    ):
        if (v := _number(value)) is not None:
            family.add_metric(key, v)
    placed = _condition(status, "Placed")
    if placed.get("status") == "False":
        f.refused.add_metric([*key, str(placed.get("reason") or "Unknown")], 1)
    if (t := _timestamp((status.get("lastRollback") or {}).get("time"))) is not None:
        f.rollback_time.add_metric(key, t)
    _add_analysis(f, key, status.get("analysis") or {})
    for pod in pods:
        pmeta = pod.get("metadata") or {}
        if (pmeta.get("labels") or {}).get(_COMPONENT_LABEL) == SERVING_COMPONENT:
            f.pod.add_metric([*key, str(pmeta.get("name") or "")], 1)
    return phase


class ResourceCollector(Collector):
    """Gauges of every DeepSeekDeployment the operator knows, read from its cache at scrape time.

    ``resources`` gives the resources' bodies, ``pods`` a resource's pods (by namespace and
    name), ``active`` whether this replica works: a replica that waits for peering reports
    ``deepseek_operator_active 0`` and no resource gauges, so two replicas never double a sum.
    """

    def __init__(
        self,
        resources: Callable[[], Iterable[Mapping[str, Any]]],
        pods: Callable[[str, str], Iterable[Mapping[str, Any]]],
        active: Callable[[], bool],
    ) -> None:
        self._resources = resources
        self._pods = pods
        self._active = active

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One scrape's gauges."""
        f = _Families()
        active = self._active()
        f.active.add_metric([], 1 if active else 0)
        counts: dict[str, int] = {str(p): 0 for p in PHASES}
        if active:
            for body in self._resources():
                meta = body.get("metadata") or {}
                ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
                phase = _add_resource(f, body, self._pods(ns, name))
                counts[phase] = counts.get(phase, 0) + 1
        for phase, n in counts.items():
            f.resources.add_metric([phase], n)
        yield from f.all()


class _Installed:
    lock = threading.Lock()
    collector: Collector | None = None


def install(collector: Collector | None) -> None:
    """Serve ``collector``'s gauges from the default registry, replacing the one installed before
    (None: only remove it). An operator started again in the same process replaces its own."""
    with _Installed.lock:
        if _Installed.collector is not None:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(_Installed.collector)
        _Installed.collector = collector
        if collector is not None:
            REGISTRY.register(collector)
