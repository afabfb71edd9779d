"""Phase and conditions during a rollout (rollout_status is pure given what was observed)."""

from __future__ import annotations

from typing import Any

import pytest

from deepseek_operator.reconcile.report import rollout_status
from deepseek_operator.rollout.decisions import Revisions
from deepseek_operator.status import Observed

BODY: dict[str, Any] = {"metadata": {"name": "r1", "namespace": "llm", "generation": 3}, "status": {}}
NOW = "2026-11-25T00:00:00Z"


def running(desired: int, ready: int) -> Observed:
    return Observed(
        deployment_found=True,
        desired_replicas=desired,
        replicas=desired,
        ready_replicas=ready,
        updated_replicas=desired,
    )


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_canary_beside_stable() -> None:
    revs = Revisions(stable="a", canary="b", epoch=2)
    status = rollout_status(BODY, revs, (running(2, 2), running(1, 1)), (None, None), "plan", "", NOW)
    assert status["phase"] == "Canary" and (status["replicas"], status["readyReplicas"]) == (3, 3)
    c = conds(status)
    assert (
        c["Progressing"]["reason"] == "Canary" and "beside the stable replicas" in c["Progressing"]["message"]
    )
    assert c["Ready"]["status"] == "True"


def test_canary_in_the_place_of_the_only_stable_replica_still_serves() -> None:
    revs = Revisions(stable="a", canary="b", lent=1, epoch=2)
    status = rollout_status(BODY, revs, (running(0, 0), running(1, 1)), (None, None), "plan", "", NOW)
    c = conds(status)
    assert status["phase"] == "Canary"
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "CanaryServing")
    assert "replacing a stable replica (no free GPUs)" in c["Progressing"]["message"]


def test_rolled_back_revision_named_by_the_spec() -> None:
    body = {
        **BODY,
        "status": {"lastRollback": {"from": "b", "to": "a", "reason": "p99 latency 812 ms > 500 ms"}},
    }
    revs = Revisions(stable="a", failed=("b",), epoch=3)
    status = rollout_status(
        body, revs, (running(2, 2), None), (None, None), "plan", "revision b failed analysis", NOW
    )
    c = conds(status)
    assert status["phase"] == "RolledBack"
    assert c["RolledBack"]["status"] == "True" and "812 ms" in c["RolledBack"]["message"]
    assert c["Progressing"]["reason"] == "RolledBack"


def test_first_deployment_that_failed_analysis() -> None:
    body = {**BODY, "status": {"analysis": {"message": "p99 latency 900 ms > 500 ms"}}}
    revs = Revisions(stable="a", failed=("a",), epoch=2)
    status = rollout_status(body, revs, (running(2, 2), None), (None, None), "plan", "", NOW)
    c = conds(status)
    assert status["phase"] == "Failed"
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "AnalysisFailed")
    assert "no earlier revision to roll back to" in c["Ready"]["message"]
    assert c["RolledBack"]["status"] == "False"


# --- observe: the pods say a revision is rolled out before the Deployment controller does ------

from deepseek_operator.planning.types import Plan  # noqa: E402
from deepseek_operator.reconcile import report  # noqa: E402
from deepseek_operator.reconcile.revision import TEMPLATE_HASH  # noqa: E402
from deepseek_operator.status import compute_phase_and_conditions  # noqa: E402

_PLAN = Plan(
    runtime="pytorch",
    precision="bf16",
    gpu_product=None,
    gpus_per_replica=1,
    tensor_parallel=1,
    pipeline_parallel=1,
    nodes_per_replica=1,
    weights_gib=1.0,
    estimated_gpu_memory_gib=2.0,
    max_batch_size=8,
    fabric="none",
)


def _children(replicas: int, pods: list[tuple[str, bool]], status: dict[str, Any] | None = None) -> Any:
    """A Deployment of revision r1 (template hash "t2", ``replicas`` wanted, ``status`` as the
    controller last wrote it: nothing yet by default) and pods (their template hash, ready)."""
    deployment = {
        "metadata": {"name": "m-r1", "generation": 2, "annotations": {TEMPLATE_HASH: "t2"}},
        "spec": {"replicas": replicas},
        "status": status or {},
    }
    children: dict[tuple[str, str], Any] = {("Deployment", "m-r1"): deployment}
    for i, (template, ready) in enumerate(pods):
        children[("Pod", f"p{i}")] = {
            "metadata": {
                "name": f"p{i}",
                "labels": {
                    "app.kubernetes.io/component": "serving",
                    "serving.deepseek.ai/revision": "r1",
                    TEMPLATE_HASH: template,
                },
            },
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }
    return children


def _phase(children: Any) -> str:
    return str(compute_phase_and_conditions(report.observe(children, "m", "r1", _PLAN), "planned")[0])


def test_every_pod_ready_on_the_current_template_is_rolled_out_before_the_deployment_says_so() -> None:
    assert _phase(_children(2, [("t2", True), ("t2", True)])) == "Ready"


def test_a_pod_on_an_older_template_or_one_missing_is_not_rolled_out() -> None:
    assert _phase(_children(2, [("t2", True), ("t1", True)])) == "Deploying"
    assert _phase(_children(2, [("t2", True)])) == "Deploying"
    # Both on the current template, one not ready: rolled out, not all serving (as the
    # Deployment controller's own counts would say).
    assert _phase(_children(2, [("t2", True), ("t2", False)])) == "Degraded"
    # More pods than wanted (one on its way out, not yet marked deleting): not yet.
    assert _phase(_children(1, [("t2", True), ("t2", True)])) == "Deploying"


def test_without_template_hashes_the_deployment_controller_decides() -> None:
    children = _children(1, [("t2", True)])
    del children[("Deployment", "m-r1")]["metadata"]["annotations"]
    assert _phase(children) == "Deploying"
    children[("Deployment", "m-r1")]["status"] = {
        "observedGeneration": 2,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
    }
    assert _phase(children) == "Ready"


# --- what a health check reads: the analysis counts, and a halt at the failure limit -------------

from deepseek_operator.rollout.decisions import Progress  # noqa: E402


def test_canary_message_carries_the_analysis_counts() -> None:
    revs = Revisions(stable="a", canary="b", epoch=2)
    progress = Progress("b", "canary", passed=2, needed=3, failed=0, limit=3)  # type: ignore[arg-type]
    status = rollout_status(
        BODY, revs, (running(2, 2), running(1, 1)), (None, None), "plan", "", NOW, progress=progress
    )
    assert conds(status)["Progressing"]["message"].startswith("canary b: 2/3 analyses passed, 1/1 ready")
    failing = Progress("b", "canary", passed=0, needed=3, failed=2, limit=3)  # type: ignore[arg-type]
    status = rollout_status(
        BODY, revs, (running(2, 2), running(1, 1)), (None, None), "plan", "", NOW, progress=failing
    )
    assert "0/3 analyses passed, 2/3 failed in a row" in conds(status)["Progressing"]["message"]


@pytest.mark.parametrize(
    ("role", "canary", "auto_rollback", "reason", "status_phase", "says"),
    [
        ("canary", "b", False, "Halted", "Canary", "canary b halted after 3 consecutive failing analyses"),
        ("stable", "", False, "Halted", "Ready", "revision a halted after 3 consecutive"),
        ("stable", "", True, "AnalysisFailing", "Ready", "no earlier good revision"),
    ],
)
def test_failure_limit_without_rollback_is_marked(
    role: str, canary: str, auto_rollback: bool, reason: str, status_phase: str, says: str
) -> None:
    revs = Revisions(stable="a", canary=canary, verified=True, epoch=2)
    subject = canary or "a"
    progress = Progress(subject, role, 0, 3, 3, 3, "p99 latency 900 ms > 500 ms", auto_rollback)  # type: ignore[arg-type]
    canary_obs = running(1, 1) if canary else None
    status = rollout_status(
        BODY, revs, (running(2, 2), canary_obs), (None, None), "plan", "", NOW, progress=progress
    )
    c = conds(status)["Progressing"]
    assert (status["phase"], c["status"], c["reason"]) == (status_phase, "False", reason)
    assert says in c["message"] and "failureLimit 3" in c["message"] and "900 ms" in c["message"]


def test_no_halt_below_the_failure_limit() -> None:
    revs = Revisions(stable="a", canary="b", epoch=2)
    progress = Progress("b", "canary", 0, 3, 2, 3, "", False)  # type: ignore[arg-type]
    status = rollout_status(
        BODY, revs, (running(2, 2), running(1, 1)), (None, None), "plan", "", NOW, progress=progress
    )
    assert (conds(status)["Progressing"]["status"], conds(status)["Progressing"]["reason"]) == (
        "True",
        "Canary",
    )


def test_rolled_back_names_the_specs_revision_when_it_is_an_older_failed_one() -> None:
    """lastRollback is the latest rollback (c); the spec went back to b, which failed earlier."""
    body = {
        **BODY,
        "status": {"lastRollback": {"from": "c", "to": "a", "reason": "p99 latency 812 ms > 500 ms"}},
    }
    revs = Revisions(stable="a", failed=("b", "c"), epoch=5)
    blocked = "revision b failed analysis and was rolled back; it is not retried until the spec changes"
    status = rollout_status(body, revs, (running(2, 2), None), (None, None), "plan", blocked, NOW)
    c = conds(status)["RolledBack"]
    assert c["status"] == "True" and c["message"].startswith("revision b failed analysis")
    assert "c ->" not in c["message"]
