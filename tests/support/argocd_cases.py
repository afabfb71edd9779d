"""DeepSeekDeployment objects in every phase and condition combination the operator reaches, made
by the operator's own pure loop (``decide`` played on :class:`tests.support.world.World`), for the
Argo CD health check's test data (manifests/argocd/resource_customizations/...).

Each case names the Argo CD health status the table of docs/gitops.md asks for and the figures its
message must carry. The objects are what the API server would hand Argo CD: the resource with the
status the operator wrote (the clock is the World's fixed one, so they are reproducible).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepseek_operator.api import names
from tests.support.world import GOOD, SLOW, World, analyse, gpu_nodes, revs, sample


def deployed(body: dict[str, Any] | None = None) -> World:
    w = World(body or sample())
    w.converge()
    return w


def with_canary(body: dict[str, Any] | None = None) -> World:
    w = deployed(body)
    w.change_spec(model__revision="v2")
    w.converge()
    return w


def no_auto_rollback() -> dict[str, Any]:
    body = sample()
    body["spec"]["rollout"]["autoRollback"] = False
    return body


# --- the cases: each returns the World at the moment to capture ---------------------------------


def _no_status() -> World:
    return World(sample())


def _generation_ahead() -> World:
    w = deployed()
    w.change_spec(replicas=2)
    return w


def _building() -> World:
    w = World(sample())
    w.apply(w.decide())
    return w


def _deploying() -> World:
    w = World(sample())
    w.apply(w.decide())
    w.settle(ready=False)
    w.apply(w.decide())
    return w


def _missing_pvc() -> World:
    w = World(sample(), references={("PersistentVolumeClaim", "model-store"): False})
    w.apply(w.decide())
    return w


def _canary_passing() -> World:
    w = with_canary()
    analyse(w, GOOD, times=2)
    return w


def _canary_failing() -> World:
    w = with_canary()
    analyse(w, SLOW, times=1)
    return w


def _rolled_back() -> World:
    w = with_canary()
    analyse(w, SLOW, times=3)
    w.converge()
    return w


def _rolled_back_stable_not_ready() -> World:
    w = _rolled_back()
    w.settle(ready=False)
    w.apply(w.decide())
    return w


def _promoted_after_a_rollback() -> World:
    w = _rolled_back()
    w.change_spec(model__revision="v3")
    w.converge()
    analyse(w, GOOD, times=3)
    w.converge()
    return w


def _canary_halted() -> World:
    w = with_canary(no_auto_rollback())
    analyse(w, SLOW, times=3)
    w.converge()
    return w


def _stable_halted() -> World:
    w = deployed(no_auto_rollback())
    analyse(w, GOOD, times=3)  # the first revision is verified
    analyse(w, SLOW, times=3)
    w.converge()
    return w


def _stable_failing_without_earlier_revision() -> World:
    w = deployed()
    analyse(w, GOOD, times=3)
    analyse(w, SLOW, times=3)
    w.converge()
    return w


def _first_revision_failed() -> World:
    w = deployed()
    analyse(w, SLOW, times=3)
    w.converge()
    return w


def _engine_build_failed() -> World:
    w = World(sample())
    w.apply(w.decide())
    job = next(c for (k, _), c in w.children.items() if k == "Job")
    job["status"] = {
        "failed": 1,
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }
        ],
    }
    w.apply(w.decide())
    return w


def _progress_deadline() -> World:
    body = sample()
    body["spec"]["replicas"] = 2
    w = deployed(body)
    workload = next(c for (k, _), c in w.children.items() if k == "Deployment")
    workload["status"] = {
        **workload["status"],
        "readyReplicas": 1,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{workload["metadata"]["name"]}-7d9f" has timed out progressing.',
            }
        ],
    }
    pods = sorted(n for (k, n) in w.children if k == "Pod")
    w.children[("Pod", pods[-1])]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    w.apply(w.decide())
    return w


def _not_placed() -> World:
    w = World(sample(), nodes=gpu_nodes("l4:1x1"))
    w.apply(w.decide())
    return w


def _not_placed_while_serving() -> World:
    w = deployed()
    w.change_spec(gpu__products=["NVIDIA-L4"])
    w.apply(w.decide())
    return w


def _invalid_spec_while_serving() -> World:
    w = deployed()
    w.change_spec(engine__maxInputTokens=-5)
    w.apply(w.decide())
    return w


@dataclass(frozen=True)
class Case:
    name: str  # the testdata file name (without .yaml)
    make: Callable[[], World]
    health: str  # Healthy | Progressing | Degraded | Suspended (the table in docs/gitops.md)
    says: tuple[str, ...] = ()  # what the message must contain ("{stable}"/"{canary}"/"{failed}": revisions)


CASES: tuple[Case, ...] = (
    Case("no-status", _no_status, "Progressing", ("waiting for the operator",)),
    Case("generation-ahead", _generation_ahead, "Progressing", ("waiting for the operator", "generation 2")),
    Case("building", _building, "Progressing", ("Building", "engine")),
    Case("deploying", _deploying, "Progressing", ("Deploying", "0/1 serving replicas ready")),
    Case("missing-pvc", _missing_pvc, "Progressing", ("model-store",)),
    Case("ready", deployed, "Healthy", ("1/1 serving replicas ready",)),
    Case("canary-passing", _canary_passing, "Progressing", ("canary {canary}: 2/3 analyses passed",)),
    Case(
        "canary-failing",
        _canary_failing,
        "Progressing",
        ("canary {canary}: 0/3 analyses passed, 1/3 failed",),
    ),
    Case(
        "rolled-back",
        _rolled_back,
        "Degraded",
        (
            "rolled back {failed} -> {stable}",
            "p99 latency 900 ms > 500 ms",
            "revision {stable} serves",
            "retry",
        ),
    ),
    Case(
        "rolled-back-stable-not-ready",
        _rolled_back_stable_not_ready,
        "Degraded",
        ("rolled back {failed} -> {stable}", "change the spec"),
    ),
    Case("promoted-after-a-rollback", _promoted_after_a_rollback, "Healthy", ("1/1 serving replicas ready",)),
    Case(
        "canary-halted",
        _canary_halted,
        "Suspended",
        (
            "canary {canary} halted",
            "3 consecutive failing analyses (failureLimit 3)",
            "900 ms",
            "autoRollback is false",
        ),
    ),
    Case("stable-halted", _stable_halted, "Suspended", ("revision {stable} halted", "autoRollback is false")),
    Case(
        "stable-failing-without-earlier-revision",
        _stable_failing_without_earlier_revision,
        "Degraded",
        ("revision {stable} halted", "no earlier good revision"),
    ),
    Case(
        "first-revision-failed", _first_revision_failed, "Degraded", ("AnalysisFailed", "{failed}", "900 ms")
    ),
    Case("engine-build-failed", _engine_build_failed, "Degraded", ("EngineBuildFailed", "backoff limit")),
    Case("progress-deadline", _progress_deadline, "Degraded", ("ProgressDeadlineExceeded", "timed out")),
    Case("not-placed", _not_placed, "Degraded", ("cannot be placed", "GiB")),
    Case(
        "not-placed-while-serving",
        _not_placed_while_serving,
        "Degraded",
        ("cannot be placed", "keeps serving"),
    ),
    Case(
        "invalid-spec-while-serving",
        _invalid_spec_while_serving,
        "Degraded",
        ("refused", "maxInputTokens", "keeps serving"),
    ),
)


def capture(w: World) -> dict[str, Any]:
    """The resource as Argo CD's cluster cache would hold it (JSON, as the API server serves it)."""
    obj: dict[str, Any] = json.loads(json.dumps(w.body))
    obj["metadata"].pop("resourceVersion", None)
    return obj


def revisions_of(w: World) -> dict[str, str]:
    """The revisions a case's message names: stable, canary, and the last failed one."""
    r = revs(w)
    failed = r.failed[-1] if r.failed else ""
    return {"stable": r.stable, "canary": r.canary, "failed": failed}


def retry_annotation() -> str:
    return names.RETRY_ANNOTATION
