"""Phase and conditions during a rollout (rollout_status is pure given what was observed)."""

from __future__ import annotations

from typing import Any

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
