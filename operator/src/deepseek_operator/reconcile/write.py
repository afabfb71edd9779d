"""write: carry out a decision's :class:`Writes`, in their order, and keep the caches current with
what the API server answered (so that the next pass does not decide on an older copy)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from deepseek_operator import metrics
from deepseek_operator.api.constants import KIND, LWS_KIND
from deepseek_operator.kube import client as kube
from deepseek_operator.reconcile.cache import Cache
from deepseek_operator.reconcile.facts import MetricOp, Scale, Writes
from deepseek_operator.reconcile.report import PHASE_REASON

log = logging.getLogger(__name__)


def _metric(op: MetricOp) -> None:
    metrics.record(op.name, op.labels, op.value)


# The objects of one pass do not depend on each other at the API server (a pod that mounts a
# ConfigMap created a moment later mounts it when the kubelet retries), so they go out together.
_POOL = ThreadPoolExecutor(max_workers=24, thread_name_prefix="apply")


_STARTS_PODS = frozenset({"Deployment", LWS_KIND, "Job"})


def _in_parallel(calls: list[Callable[[], Any]]) -> None:
    """Run ``calls`` at once; the first error is raised after all have finished."""
    if len(calls) <= 1:
        for call in calls:
            call()
        return
    futures = [_POOL.submit(call) for call in calls]
    wait(futures)
    for f in futures:
        f.result()


def _apply(cache: Cache, obj: dict[str, Any]) -> None:
    cache.remember(str(obj["kind"]), kube.apply(obj))


def _scales(cache: Cache, namespace: str, w: Writes, which: Callable[[Scale], bool] = lambda s: True) -> None:
    for s in w.scale:
        if which(s):
            cache.remember(s.kind, kube.apply_scale(s.api_version, s.kind, namespace, s.name, s.replicas))


def _apply_and_scale(cache: Cache, namespace: str, obj: dict[str, Any], w: Writes) -> None:
    """Apply ``obj``, then set the replica counts ``w`` has for it."""
    _apply(cache, obj)
    _scales(cache, namespace, w, lambda s: (s.kind, s.name) == (obj["kind"], obj["metadata"]["name"]))


def _relabel(cache: Cache, namespace: str, pod_name: str, labels: dict[str, str | None]) -> None:
    if (pod := kube.patch_labels("v1", "Pod", namespace, pod_name, labels)) is not None:
        cache.remember("Pod", pod)


def _start_early(cache: Cache, namespace: str, w: Writes) -> list[Future[None]]:
    """Send the objects and pod labels of a pass that moves nothing running; the rest of the pass
    waits for the futures. What starts pods (a workload, a build Job) goes alone and first: the
    pods' way to Ready (the controllers, the scheduler, the kubelet) is the longest, and the other
    writes would compete with it for the API server."""
    first = [o for o in w.apply if o["kind"] in _STARTS_PODS]
    rest = [o for o in w.apply if o["kind"] not in _STARTS_PODS]
    lead = [_POOL.submit(_apply_and_scale, cache, namespace, o, w) for o in first]
    wait(lead)  # its errors are raised with the others', after the status
    early = lead + [_POOL.submit(_apply_and_scale, cache, namespace, o, w) for o in rest]
    return early + [_POOL.submit(_relabel, cache, namespace, r.pod, dict(r.labels)) for r in w.relabel]


def execute(cache: Cache, body: Mapping[str, Any], w: Writes) -> dict[str, Any]:
    """Do ``w`` for the resource ``body``; returns the resource as it is after (its new status).

    The status write is conditional on ``body``'s resourceVersion: when the resource changed
    meanwhile it raises TransientError before any object moves (unless the objects went first,
    for a first deployment: then they are what the next pass decides again), and the pass is
    made again on the newer version.
    """
    plain = dict(body)
    namespace = str(body["metadata"]["namespace"])
    # Before the status, together: the new records and the events that explain it (so that
    # whoever sees the new status finds them). A first deployment's objects start at the same
    # time and may still be on their way while the status is written (the pass ends when all
    # are done). A phase event only repeats what the status says: it goes out with the status.
    explaining = [e for e in w.events if e[1] != PHASE_REASON]
    phase_events: list[Callable[[], Any]] = [
        functools.partial(kube.post_event, plain, *e) for e in w.events if e[1] == PHASE_REASON
    ]
    early = [] if w.status_first else _start_early(cache, namespace, w)
    before: list[Callable[[], Any]] = [functools.partial(_apply, cache, r) for r in w.records]
    before += [functools.partial(kube.post_event, plain, *e) for e in explaining]
    try:
        _in_parallel(before)
        if w.status:
            patched: list[dict[str, Any]] = []
            _in_parallel([lambda: patched.append(kube.patch_status(plain, w.status)), *phase_events])
            plain = patched[0]
            cache.remember(KIND, plain)
        else:
            _in_parallel(phase_events)
    finally:
        wait(early)
    for f in early:
        f.result()
    if not w.status_first:  # counts of objects that already existed (a pass made again)
        applied = {(o["kind"], o["metadata"]["name"]) for o in w.apply}
        _scales(cache, namespace, w, lambda s: (s.kind, s.name) not in applied)
    if w.status_first:
        _in_parallel([functools.partial(_apply, cache, o) for o in w.apply])
        _scales(cache, namespace, w)
    for d in w.delete:
        kube.delete(d.api_version, d.kind, namespace, d.name)
        cache.forget(d.kind, namespace, d.name)
    if w.status_first:
        for r in w.relabel:
            _relabel(cache, namespace, r.pod, dict(r.labels))
    for op in w.metrics:
        _metric(op)
    for kind, reason, message in w.events:  # the operator's log says what its events say
        log.info("%s/%s: %s %s: %s", namespace, body["metadata"]["name"], kind, reason, message)
    return plain
