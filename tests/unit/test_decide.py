"""Table tests of the loop's pure decide function, on every rollout path, with no cluster.

Each test plays passes on :class:`tests.support.world.World`: decide, carry out the writes as
the API server would, let the controllers settle, decide again. What the real loop does is
checked against the real control plane in tests/integration.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from deepseek_operator.api import names
from deepseek_operator.reconcile.facts import AnalysisRun, Writes
from deepseek_operator.rollout.decisions import Measurement
from tests.support.world import GOOD, SLOW, World, analyse, gpu_nodes, revs, sample

UNREACHABLE = Measurement(problems=("revision x cannot be reached",))


def conds(w: World) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in w.body["status"]["conditions"]}


def kinds(writes: Writes) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in writes.apply)


def reasons(w: World) -> list[str]:
    return [r for _, r, _ in w.events]


def traffic(w: World) -> dict[str, str | None]:
    """Each revision's pods' traffic label (one value per revision: all its pods agree)."""
    seen: dict[str, set[str | None]] = {}
    for (k, _), p in w.children.items():
        if k == "Pod":
            labels = p["metadata"]["labels"]
            seen.setdefault(labels[names.REVISION_LABEL], set()).add(labels.get(names.TRAFFIC_LABEL))
    assert all(len(v) == 1 for v in seen.values()), seen
    return {r: next(iter(v)) for r, v in seen.items()}


def deployed() -> World:
    """A sample that converged: its first revision is stable and Ready."""
    w = World(sample())
    w.converge()
    assert w.body["status"]["phase"] == "Ready"
    return w


def new_revision(w: World) -> str:
    w.change_spec(model__revision="v2")
    w.converge()
    canary = revs(w).canary
    assert canary and canary != revs(w).stable
    return canary


# --- first deployment -------------------------------------------------------------------------


def test_first_pass_records_and_creates_everything_in_order() -> None:
    w = World(sample())
    first = w.decide()
    revision = first.status["revisions"]["stable"]
    assert [r["kind"] for r in first.records] == ["ControllerRevision"]
    assert first.status["observedGeneration"] == 1 and first.status["placement"]["gpusPerReplica"] == 1
    assert kinds(first) == sorted(
        [
            ("ConfigMap", names.model_repository_name("r1-qwen-7b", revision)),
            ("Deployment", names.workload_name("r1-qwen-7b", revision)),
            ("Job", first.apply[1]["metadata"]["name"]),
            ("PodDisruptionBudget", "r1-qwen-7b"),
            ("Service", "r1-qwen-7b"),
        ]
    )
    assert first.scale == []  # created without a count: the API server sets 1, the count wanted
    assert not first.status_first  # a first deployment moves nothing that runs: objects go first
    assert first.status["phase"] == "Building"  # the engine is not built yet


def test_converged_resource_writes_nothing() -> None:
    w = deployed()
    again = w.decide()
    assert again.empty() and not again.status and not again.apply
    c = conds(w)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("True", "Serving")
    assert c["EngineReady"]["reason"] == "Built"


def test_pdb_selects_the_stable_revision_only() -> None:
    w = deployed()
    pdb = next(o for o in World(sample()).decide().apply if o["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"][names.REVISION_LABEL] == revs(w).stable


def test_pytorch_path_has_no_build_job() -> None:
    w = World(sample("deepseek-r1-h200"))
    first = w.decide()
    assert "Job" not in [k for k, _ in kinds(first)]


# --- spec problems ------------------------------------------------------------------------------


def test_invalid_spec_is_a_condition_and_an_event_and_nothing_moves() -> None:
    w = deployed()
    w.change_spec(engine__maxInputTokens=-5)
    bad = w.decide()
    w.apply(bad)
    assert not bad.apply and not bad.delete and not bad.scale
    assert (
        conds(w)["Progressing"]["reason"] == "InvalidSpec"
        and "maxInputTokens" in conds(w)["Progressing"]["message"]
    )
    assert conds(w)["Ready"]["status"] == "True" and w.body["status"]["phase"] == "Degraded"
    assert "InvalidSpec" in reasons(w)


def test_a_spec_refused_by_the_spec_step_stays_refused_while_the_children_move() -> None:
    """Valid for the schema, refused when laid out (the engine path has nowhere to cache an engine
    built from a uri): later passes, woken by the running revision's children, keep saying so."""
    w = deployed()
    w.change_spec(model__source={"uri": "s3://models/qwen-7b"})
    w.apply(w.decide())
    assert conds(w)["Progressing"]["reason"] == "InvalidSpec"
    assert "cacheClaimName" in conds(w)["Progressing"]["message"]
    assert w.body["status"]["phase"] == "Degraded"
    w.settle(ready=False)  # the serving pods stop being ready
    w.apply(w.decide())
    c = conds(w)
    assert c["Progressing"]["reason"] == "InvalidSpec"
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "InvalidSpec")
    assert w.body["status"]["phase"] == "Failed" and w.body["status"]["readyReplicas"] == 0
    w.settle(ready=True)
    w.apply(w.decide())
    assert conds(w)["Progressing"]["reason"] == "InvalidSpec" and w.body["status"]["phase"] == "Degraded"
    assert w.decide().empty()  # and a pass with nothing new writes nothing
    w.change_spec(model__source=sample()["spec"]["model"]["source"])  # fixed
    w.converge()
    assert w.body["status"]["phase"] == "Ready" and conds(w)["Progressing"]["reason"] != "InvalidSpec"


def test_nothing_fits_says_why_and_waits_for_capacity() -> None:
    w = World(sample(), nodes=gpu_nodes("l4:1x1"))
    out = w.decide()
    w.apply(out)
    assert out.waiting_for_capacity and not out.apply
    assert conds(w)["Placed"]["status"] == "False" and w.body["status"]["phase"] == "Pending"
    assert "NotPlaced" in reasons(w)
    # The refusal is counted once by its reason (metrics.py), not at every pass that finds it again.
    reason = conds(w)["Placed"]["reason"]
    assert [(m.name, m.labels[2]) for m in out.metrics] == [("placement_refusals", reason)]
    assert not w.decide().metrics
    w.nodes = gpu_nodes()  # GPUs free up: the next pass places it
    w.converge()
    assert w.body["status"]["phase"] == "Ready"


@pytest.mark.parametrize(
    ("kind", "name", "reason"),
    [("PersistentVolumeClaim", "model-store", "PVCNotFound")],
)
def test_missing_reference_blocks_children_and_names_the_object(kind: str, name: str, reason: str) -> None:
    w = World(sample(), references={(kind, name): False})
    out = w.decide()
    w.apply(out)
    assert not out.apply and not out.records and out.requeue_after
    c = conds(w)
    assert c["Progressing"]["reason"] == reason and f'"{name}"' in c["Progressing"]["message"]
    assert c["Ready"]["reason"] == reason and reason in reasons(w)
    w.references = {(kind, name): True}
    w.converge()
    assert w.body["status"]["phase"] == "Ready"


def test_missing_secret_of_a_download_is_named() -> None:
    w = World(sample("deepseek-v2-lite"), references={("Secret", "hf-token"): False})
    w.apply(w.decide())
    assert conds(w)["Ready"]["reason"] == "SecretNotFound" and "hf-token" in conds(w)["Ready"]["message"]


# --- what blocks progress -------------------------------------------------------------------------


def _pending(w: World, component: str, message: str) -> None:
    revision = revs(w).stable
    labels = {**names.labels("r1-qwen-7b", component), names.REVISION_LABEL: revision}
    if component == names.COMPONENT_ENGINE_BUILD:
        job = next(n for (k, n) in w.children if k == "Job")
        labels["batch.kubernetes.io/job-name"] = job
    w.children[("Pod", "p-0")] = {
        "metadata": {"name": "p-0", "namespace": "llm", "labels": labels},
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ],
        },
    }


def test_unschedulable_build_pod_is_named_in_engine_ready() -> None:
    w = World(sample())
    w.apply(w.decide())
    _pending(w, names.COMPONENT_ENGINE_BUILD, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    w.apply(w.decide())
    c = conds(w)
    assert (c["EngineReady"]["reason"], c["Ready"]["reason"]) == ("Unschedulable", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in c["EngineReady"]["message"]


def test_missing_pvc_seen_by_the_scheduler_is_named() -> None:
    w = World(sample())
    w.apply(w.decide())
    _pending(
        w,
        names.COMPONENT_ENGINE_BUILD,
        '0/3 nodes are available: persistentvolumeclaim "model-store" not found.',
    )
    w.apply(w.decide())
    assert conds(w)["Ready"]["reason"] == "PVCNotFound" and "model-store" in conds(w)["Ready"]["message"]


def test_image_pull_failure_of_serving_pods_is_named() -> None:
    w = World(sample())
    w.apply(w.decide())
    w.settle(ready=False)
    pod = next(p for (k, _), p in w.children.items() if k == "Pod")
    pod["status"]["containerStatuses"] = [
        {
            "name": "triton",
            "image": "nvcr.io/x:bad",
            "ready": False,
            "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
        }
    ]
    w.apply(w.decide())
    c = conds(w)
    assert c["Ready"]["reason"] == "ImagePullFailed" and "nvcr.io/x:bad" in c["Ready"]["message"]
    assert c["Progressing"]["reason"] == "ImagePullFailed"


# --- canary, promotion, rollback --------------------------------------------------------------------


def test_new_revision_starts_a_canary_beside_stable() -> None:
    w = deployed()
    stable = revs(w).stable
    canary = new_revision(w)
    assert revs(w).stable == stable and revs(w).lent == 0
    assert "CanaryStarted" in reasons(w) and w.body["status"]["phase"] == "Canary"
    assert ("Deployment", names.workload_name("r1-qwen-7b", canary)) in w.children
    labels = [
        p["metadata"]["labels"].get(names.TRAFFIC_LABEL) for (k, _), p in w.children.items() if k == "Pod"
    ]
    assert labels == ["serving", "serving"]


def test_canary_without_free_gpus_replaces_a_stable_replica() -> None:
    w = World(sample(), nodes=gpu_nodes("h100:1x1"))
    w.converge()
    w.other_pods = []
    new_revision(w)
    r = revs(w)
    assert r.lent == 1 and w.body["status"]["revisions"]["canaryMode"] == "ReplaceReplica"
    stable = w.children[("Deployment", names.workload_name("r1-qwen-7b", r.stable))]
    assert stable["spec"]["replicas"] == 0


def test_passing_canary_is_promoted_after_successful_analyses() -> None:
    w = deployed()
    old = revs(w).stable
    canary = new_revision(w)
    analyse(w, GOOD, times=2)
    assert revs(w).canary == canary
    analyse(w, GOOD)
    r = revs(w)
    assert (r.stable, r.canary, r.previous) == (canary, "", old)
    assert "Promoted" in reasons(w)
    # the old stable is a standby of 0 replicas: kept, without traffic
    assert w.children[("Deployment", names.workload_name("r1-qwen-7b", old))]["spec"]["replicas"] == 0
    w.converge()
    assert w.body["status"]["phase"] == "Ready"


class Recording(World):
    """A World that keeps every pass's writes, with the revisions in status before it."""

    passes: list[tuple[str, Writes]]

    def apply(self, w: Writes, upto: str = "all") -> None:
        before = (self.body.get("status") or {}).get("revisions") or {}
        self.__dict__.setdefault("passes", []).append((str(before.get("stable") or ""), w))
        super().apply(w, upto)


@pytest.mark.parametrize("measurement", [GOOD, SLOW], ids=["promoted", "rolled-back"])
def test_status_goes_first_exactly_when_it_decides_about_running_revisions(measurement: Measurement) -> None:
    w = Recording(sample())
    w.converge()
    new_revision(w)
    analyse(w, measurement, times=3)
    w.converge()
    passes = w.__dict__["passes"]
    decisions = [
        x for stable, x in passes if stable and ("revisions" in x.status or "lastRollback" in x.status)
    ]
    assert len(decisions) >= 2  # the canary, then the promotion or the rollback
    for stable, x in passes:
        decided = "revisions" in x.status or "lastRollback" in x.status
        assert x.status_first == (bool(stable) and decided), (stable, sorted(x.status), x.status_first)


def test_serving_pods_start_with_the_traffic_label_and_no_pass_relabels_them() -> None:
    w = Recording(sample())
    w.converge()
    stable = revs(w).stable
    assert traffic(w) == {stable: "serving"}
    assert [x.relabel for _, x in w.__dict__["passes"] if x.relabel] == []  # no write per pod
    canary = new_revision(w)
    assert traffic(w) == {stable: "serving", canary: "serving"}  # a canary takes its share at once
    assert [x.relabel for _, x in w.__dict__["passes"] if x.relabel] == []


def test_the_rollback_pass_writes_the_phase_and_the_rolled_back_condition_together() -> None:
    w = deployed()
    canary = new_revision(w)
    rollback = analyse(w, SLOW, times=3)
    assert rollback.status["lastRollback"]["from"] == canary
    assert rollback.status["phase"] == "RolledBack"
    (cond,) = [c for c in rollback.status["conditions"] if c["type"] == "RolledBack"]
    assert cond["status"] == "True" and canary in cond["message"]


def test_failing_canary_is_rolled_back_and_not_retried() -> None:
    w = deployed()
    stable = revs(w).stable
    canary = new_revision(w)
    last = analyse(w, SLOW, times=3)
    r = revs(w)
    assert (r.stable, r.canary, r.failed) == (stable, "", (canary,))
    assert any(m.name == "rollbacks" and m.labels[2] == "latency" for m in last.metrics)
    assert w.body["status"]["lastRollback"]["from"] == canary
    assert ("Deployment", names.workload_name("r1-qwen-7b", canary)) not in w.children
    # The pass that rolls back already says so: no Canary -> Ready -> RolledBack flicker.
    assert w.body["status"]["phase"] == "RolledBack"
    assert [m for _, r, m in w.events if r == "Phase"][-1] == "phase Canary -> RolledBack"
    w.converge()
    assert w.body["status"]["phase"] == "RolledBack" and conds(w)["RolledBack"]["status"] == "True"


def test_retry_annotation_starts_the_failed_revision_again() -> None:
    w = deployed()
    canary = new_revision(w)
    analyse(w, SLOW, times=3)
    w.body["metadata"]["annotations"] = {names.RETRY_ANNOTATION: "1"}
    w.converge()
    assert revs(w).canary == canary and "Retry" in reasons(w)


def test_crash_between_the_decision_and_its_application_finishes_it_once() -> None:
    w = deployed()
    canary = new_revision(w)
    analyse(w, SLOW, times=2)
    w.now += dt.timedelta(seconds=31)
    decision = w.decide(AnalysisRun(canary, "canary", SLOW, None))  # type: ignore[arg-type]
    w.apply(decision, upto="status")  # killed after the status write
    assert revs(w).canary == "" and ("Deployment", names.workload_name("r1-qwen-7b", canary)) in w.children
    events_before = len(w.events)
    after = w.decide()  # the restarted operator
    assert [d.name for d in after.delete if d.kind == "Deployment"] == [
        names.workload_name("r1-qwen-7b", canary)
    ]
    assert "revisions" not in after.status and "RolledBack" not in [r for _, r, _ in after.events]
    w.apply(after)
    assert len([r for r in reasons(w)[events_before:] if r == "RolledBack"]) == 0


def test_stable_that_drifts_rolls_back_to_the_warm_standby() -> None:
    body = sample()
    body["spec"]["rollout"]["standbyReplicas"] = 1
    w = World(body)
    w.converge()
    old = revs(w).stable
    new = new_revision(w)
    analyse(w, GOOD, times=3)
    assert revs(w).stable == new
    w.converge()
    assert w.children[("Deployment", names.workload_name("r1-qwen-7b", old))]["spec"]["replicas"] == 1
    assert traffic(w) == {old: None, new: "serving"}  # the warm standby's pods are out of the Service
    lost = next(n for (k, n), p in w.children.items() if k == "Pod" and old in n)
    del w.children[("Pod", lost)]  # its node went away: the ReplicaSet makes it again
    w.settle(ready=False)
    assert traffic(w) == {old: "serving", new: "serving"}  # as its template has it, not yet ready
    again = w.decide()
    assert [r.labels for r in again.relabel] == [{names.TRAFFIC_LABEL: None}] and not again.status_first
    w.apply(again)
    w.settle()
    assert traffic(w) == {old: None, new: "serving"}
    analyse(w, SLOW, times=3)
    r = revs(w)
    assert (r.stable, r.failed) == (old, (new,))
    assert traffic(w)[old] == "serving"  # back in, by a label: no pod started


def test_spec_back_at_stable_aborts_the_canary() -> None:
    w = deployed()
    new_revision(w)
    w.change_spec(model__revision="main")
    w.converge()
    assert revs(w).canary == "" and "CanaryAborted" in reasons(w)


def test_promotion_under_an_hpa_keeps_the_reached_count() -> None:
    body = sample()
    body["spec"].pop("replicas")
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 4}
    w = World(body)
    w.converge()
    stable = names.workload_name("r1-qwen-7b", revs(w).stable)
    w.children[("Deployment", stable)]["spec"] = {"replicas": 3}  # the HPA scaled it
    canary = new_revision(w)
    analyse(w, GOOD, times=3)
    assert revs(w).stable == canary
    assert w.children[("Deployment", names.workload_name("r1-qwen-7b", canary))]["spec"]["replicas"] == 3


# --- analysis bookkeeping -----------------------------------------------------------------------------


def test_repeated_inconclusive_analysis_is_not_written_again() -> None:
    w = deployed()
    first = analyse(w, UNREACHABLE)
    assert "analysis" in first.status
    second = analyse(w, UNREACHABLE)
    assert not second.status and second.analysis_ran_at == w.now
    assert second.requeue_after == pytest.approx(30.0)


def test_next_analysis_is_scheduled_at_its_interval() -> None:
    w = deployed()
    out = analyse(w, GOOD)
    assert out.requeue_after == pytest.approx(30.0)
    w.now += dt.timedelta(seconds=10)
    assert w.decide().requeue_after == pytest.approx(20.0)


def test_no_analysis_while_no_pod_is_ready() -> None:
    w = World(sample())
    w.apply(w.decide())
    w.settle(ready=False)
    out = w.decide()
    assert out.requeue_after == pytest.approx(30.0)  # pods becoming ready wake it sooner


# --- what Argo CD's health check reads (docs/gitops.md) ------------------------------------------


def test_without_auto_rollback_a_canary_at_its_failure_limit_is_marked_halted_until_the_spec_changes() -> (
    None
):
    body = sample()
    body["spec"]["rollout"]["autoRollback"] = False
    w = World(body)
    w.converge()
    canary = new_revision(w)
    analyse(w, SLOW, times=2)
    assert (conds(w)["Progressing"]["status"], conds(w)["Progressing"]["reason"]) == ("True", "Canary")
    assert f"canary {canary}: 0/3 analyses passed, 2/3 failed in a row" in conds(w)["Progressing"]["message"]
    analyse(w, SLOW)
    w.converge()
    c = conds(w)["Progressing"]
    assert (w.body["status"]["phase"], c["status"], c["reason"]) == ("Canary", "False", "Halted")
    assert "failureLimit 3" in c["message"] and "autoRollback is false" in c["message"]
    analyse(w, SLOW)  # more failures: still halted, no rollback
    assert conds(w)["Progressing"]["reason"] == "Halted" and revs(w).canary == canary
    w.change_spec(model__revision="v3")  # the user's answer: a new revision
    w.converge()
    c = conds(w)["Progressing"]
    assert (c["status"], c["reason"]) == ("True", "Canary") and revs(w).canary != canary


def test_after_a_rollback_and_a_promotion_the_rolled_back_condition_is_false_again() -> None:
    """status.lastRollback is history and stays; RolledBack says whether the spec's revision is."""
    w = deployed()
    new_revision(w)
    analyse(w, SLOW, times=3)
    w.converge()
    assert conds(w)["RolledBack"]["status"] == "True"
    w.change_spec(model__revision="v3")
    w.converge()
    analyse(w, GOOD, times=3)
    w.converge()
    assert w.body["status"]["phase"] == "Ready" and w.body["status"]["lastRollback"]
    assert (conds(w)["RolledBack"]["status"], conds(w)["RolledBack"]["reason"]) == ("False", "NoRollback")


def test_a_resource_being_deleted_makes_nothing_again() -> None:
    w = deployed()
    w.body["metadata"]["deletionTimestamp"] = "2026-12-01T09:00:00Z"
    w.body["metadata"]["finalizers"] = ["foregroundDeletion"]  # its children are deleted first
    for key in [k for k in w.children if k[0] in ("Deployment", "Service")]:
        del w.children[key]
    writes = w.decide()
    assert (writes.apply, writes.records, writes.scale, writes.relabel, writes.status) == ([], [], [], [], {})
    assert writes.requeue_after is None and writes.events == []
