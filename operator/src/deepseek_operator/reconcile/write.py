"""write: carry out a decision's :class:`Writes`, in their order, and keep the caches current with
what the API server answered (so that the next pass does not decide on an older copy)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deepseek_operator import metrics
from deepseek_operator.api.constants import KIND
from deepseek_operator.kube import client as kube
from deepseek_operator.reconcile import analysis_step as an
from deepseek_operator.reconcile.cache import Cache
from deepseek_operator.reconcile.facts import MetricOp, Writes


def _metric(op: MetricOp) -> None:
    if op.name == an.ANALYSES:
        metrics.ANALYSES.labels(*op.labels).inc(op.value)
    elif op.name == an.ROLLBACKS:
        metrics.ROLLBACKS.labels(*op.labels).inc(op.value)
    elif op.name == an.PROMOTIONS:
        metrics.PROMOTIONS.labels(*op.labels).inc(op.value)
    elif op.name == an.DRIFT_TO_ROLLBACK:
        metrics.DRIFT_TO_ROLLBACK.labels(*op.labels).observe(op.value)


def execute(cache: Cache, body: Mapping[str, Any], w: Writes) -> dict[str, Any]:
    """Do ``w`` for the resource ``body``; returns the resource as it is after (its new status).

    The status write is conditional on ``body``'s resourceVersion: when the resource changed
    meanwhile it raises TransientError before any object moves, and the pass is made again on
    the newer version. Events go out before the status, so that whoever sees the new status
    finds the events that explain it.
    """
    plain = dict(body)
    namespace = str(body["metadata"]["namespace"])
    for record in w.records:
        cache.remember(str(record["kind"]), kube.apply(record))
    for kind, reason, message in w.events:
        kube.post_event(plain, kind, reason, message)
    if w.status:
        plain = kube.patch_status(plain, w.status)
        cache.remember(KIND, plain)
    for obj in w.apply:
        cache.remember(str(obj["kind"]), kube.apply(obj))
    for s in w.scale:
        cache.remember(s.kind, kube.apply_scale(s.api_version, s.kind, namespace, s.name, s.replicas))
    for d in w.delete:
        kube.delete(d.api_version, d.kind, namespace, d.name)
        cache.forget(d.kind, namespace, d.name)
    for r in w.relabel:
        if (pod := kube.patch_labels("v1", "Pod", namespace, r.pod, dict(r.labels))) is not None:
            cache.remember("Pod", pod)
    for op in w.metrics:
        _metric(op)
    return plain
