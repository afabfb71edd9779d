"""The status step (pure): from the watched children to phase, conditions and replica counts,
naming the first thing that blocks progress (a pod the scheduler cannot place, an image that
cannot be pulled, a crash loop, a failed engine build with its last log line)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deepseek_operator import status as st
from deepseek_operator.api import names
from deepseek_operator.api.constants import LABEL_COMPONENT
from deepseek_operator.api.types import ConditionType, Phase, Role
from deepseek_operator.diagnosis import Blocker, job_blocker, pod_blocker
from deepseek_operator.planning.types import Plan
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.reconcile.facts import ChildKey, Event
from deepseek_operator.rollout import decisions
from deepseek_operator.rollout.decisions import Revisions

Children = Mapping[ChildKey, Mapping[str, Any]]
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by the Job controller on its pods (Kubernetes 1.27+)


def _of_kind(children: Children, kind: str) -> list[Mapping[str, Any]]:
    return [o for (k, _), o in sorted(children.items()) if k == kind]


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def engine_job(children: Children, revision: str) -> Mapping[str, Any] | None:
    """The engine build Job of ``revision`` (the newest when there are several)."""
    jobs = [j for j in _of_kind(children, "Job") if _labels(j).get(names.REVISION_LABEL) == revision]
    return jobs[-1] if jobs else None


def serving_pods(children: Children, revision: str) -> list[Mapping[str, Any]]:
    """The serving pods of ``revision``."""
    return [
        p
        for p in _of_kind(children, "Pod")
        if _labels(p).get(LABEL_COMPONENT) == names.COMPONENT_SERVING
        and _labels(p).get(names.REVISION_LABEL) == revision
    ]


def job_pods(children: Children, job: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The pods of a Job."""
    if job is None:
        return []
    name = (job.get("metadata") or {}).get("name")
    return [
        p
        for p in _of_kind(children, "Pod")
        if _labels(p).get(JOB_NAME_LABEL) == name or _labels(p).get("job-name") == name
    ]


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return _condition(pod, "Ready") is not None


def _all_on_template(workload: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> bool:
    """Whether every pod runs the Deployment's pod template as it is now (by its hash)."""
    template = ((workload.get("metadata") or {}).get("annotations") or {}).get(rv.TEMPLATE_HASH)
    return bool(template) and all(_labels(p).get(rv.TEMPLATE_HASH) == template for p in pods)


def observe(children: Children, owner: str, revision: str, plan: Plan) -> st.Observed:
    """What the watched children show of one revision: its workload and its engine build Job."""
    multi = plan.nodes_per_replica > 1
    engine_needed = plan.runtime == "tensorrt-llm" and not multi
    engine_ok, engine_failed = False, None
    if engine_needed and (job := engine_job(children, revision)) is not None:
        engine_ok = _condition(job, "Complete") is not None
        if (failed := _condition(job, "Failed")) is not None:
            engine_failed = f"engine build Job {job['metadata']['name']} failed: {failed.get('message', '')}"
    _, kind = rv.workload_kind(plan)
    workload = children.get((kind, names.workload_name(owner, revision)))
    if workload is None:
        return st.Observed(
            engine_needed=engine_needed, engine_succeeded=engine_ok, engine_failed=engine_failed
        )
    wstatus = workload.get("status") or {}
    failed_msg = None
    for cond in wstatus.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failed_msg = cond.get("message", "the serving Deployment exceeded its progress deadline")
    generation = (workload.get("metadata") or {}).get("generation", 0)
    desired = int((workload.get("spec") or {}).get("replicas", 1))
    ready = int(wstatus.get("readyReplicas", 0))
    replicas, updated = int(wstatus.get("replicas", 0)), int(wstatus.get("updatedReplicas", 0))
    observed_generation = True if multi else wstatus.get("observedGeneration", 0) >= generation
    if not multi:
        # The pods say it first: the Deployment's counts follow two controller writes later.
        pods = [
            p
            for p in serving_pods(children, revision)
            if not (p.get("metadata") or {}).get("deletionTimestamp")
        ]
        ready = max(ready, len([p for p in pods if _pod_ready(p)]))
        if _all_on_template(workload, pods) and len(pods) == desired:
            replicas = updated = desired
            observed_generation = True
    return st.Observed(
        deployment_found=True,
        desired_replicas=desired,
        replicas=replicas,
        ready_replicas=ready,
        updated_replicas=updated,
        deployment_generation_observed=observed_generation,
        deployment_failed=failed_msg,
        engine_needed=engine_needed,
        engine_succeeded=engine_ok,
        engine_failed=engine_failed,
    )


def revision_blocker(children: Children, revision: str, observed: st.Observed) -> Blocker | None:
    """The first thing keeping ``revision`` from serving: its engine build, then its pods."""
    if observed.engine_needed and not observed.engine_succeeded:
        job = engine_job(children, revision)
        return job_blocker(job, job_pods(children, job)) if job is not None else None
    if observed.deployment_found and observed.ready_replicas >= observed.desired_replicas:
        return None
    return pod_blocker(serving_pods(children, revision), "serving")


def _replace(conds: list[st.Condition], new: st.Condition) -> list[st.Condition]:
    return [c for c in conds if c.type != new.type] + [new]


DECRYPTION_FAILED = "WeightsDecryptionFailed"


def _blocked_conditions(conds: list[st.Condition], phase: str, b: Blocker) -> list[st.Condition]:
    """Conditions with the blocker named: EngineReady for a build or the weights' decryption,
    Progressing for pods, and Ready while nothing serves."""
    if (b.where == "engine" and b.reason != "BuildFailed") or b.reason == DECRYPTION_FAILED:
        conds = _replace(conds, st.Condition(ConditionType.ENGINE_READY, "False", b.reason, b.message))
    ready = next((c for c in conds if c.type == "Ready"), None)
    if ready is not None and ready.status != "True" and b.reason != "BuildFailed":
        conds = _replace(conds, st.Condition(ConditionType.READY, "False", b.reason, b.message))
    if phase != "Failed":
        conds = _replace(conds, st.Condition(ConditionType.PROGRESSING, "False", b.reason, b.message))
    return conds


def _failed_stable(
    conds: list[st.Condition], revs: Revisions, current: Mapping[str, Any]
) -> list[st.Condition]:
    reason = (current.get("analysis") or {}).get("message") or "analysis failed"
    return _replace(
        conds,
        st.Condition(
            ConditionType.READY,
            "False",
            "AnalysisFailed",
            f"revision {revs.stable} failed analysis and there is no earlier revision to roll back "
            f"to: {reason}",
        ),
    )


def _canary_conditions(
    conds: list[st.Condition],
    revs: Revisions,
    stable_obs: st.Observed,
    canary_obs: st.Observed,
    blocker: Blocker | None,
    progress: decisions.Progress | None = None,
) -> list[st.Condition]:
    serving = stable_obs.ready_replicas + canary_obs.ready_replicas
    if stable_obs.desired_replicas == 0 and serving:
        # The canary took the only stable replica's place (no free GPUs): it is what serves.
        conds = _replace(
            conds,
            st.Condition(
                ConditionType.READY, "True", "CanaryServing", f"{serving} replica(s) of the canary serving"
            ),
        )
    mode = "replacing a stable replica (no free GPUs)" if revs.lent else "beside the stable replicas"
    analyses = ""
    if progress is not None and progress.revision == revs.canary:
        analyses = f"{progress.passed}/{progress.needed} analyses passed, "
        if progress.failed:
            analyses += f"{progress.failed}/{progress.limit} failed in a row, "
    message = (
        f"canary {revs.canary}: {analyses}{canary_obs.ready_replicas}/{canary_obs.desired_replicas} "
        f"ready, {mode}; stable {revs.stable}"
    )
    if blocker is not None:
        message += f"; blocked: {blocker.message}"
        if blocker.reason == DECRYPTION_FAILED:
            # The canary's weights cannot be decrypted; the stable revision serves on untouched.
            conds = _replace(
                conds, st.Condition(ConditionType.ENGINE_READY, "False", blocker.reason, blocker.message)
            )
    return _replace(conds, st.Condition(ConditionType.PROGRESSING, "True", "Canary", message))


HALTED = "Halted"  # Progressing reason: the failure limit is reached and autoRollback is false
ANALYSIS_FAILING = "AnalysisFailing"  # Progressing reason: the same, with no earlier revision to go to


def _halted_condition(revs: Revisions, progress: decisions.Progress) -> st.Condition:
    """Progressing=False for a revision at its failure limit that nothing rolls back: Halted when
    autoRollback is false (the user decides), AnalysisFailing when there is no revision to go to."""
    figures = f"{progress.failed} consecutive failing analyses (failureLimit {progress.limit})"
    if progress.role == Role.CANARY:
        who = f"canary {progress.revision} halted after {figures}: {progress.halted}"
        keeps = f"stable {revs.stable} keeps serving beside it"
    else:
        who = f"revision {progress.revision} halted after {figures}: {progress.halted}"
        keeps = "it keeps serving"
    if not progress.auto_rollback:
        return st.Condition(
            ConditionType.PROGRESSING,
            "False",
            HALTED,
            f"{who}; autoRollback is false, so nothing is rolled back and {keeps}: change the spec "
            "(back to the serving revision to roll back)",
        )
    return st.Condition(
        ConditionType.PROGRESSING,
        "False",
        ANALYSIS_FAILING,
        f"{who}; there is no earlier good revision to roll back to and {keeps}: change the spec",
    )


def rollout_status(
    body: Mapping[str, Any],
    revs: Revisions,
    observed: tuple[st.Observed, st.Observed | None],
    blockers: tuple[Blocker | None, Blocker | None],
    plan_message: str,
    blocked: str,
    now: str,
    conditions: list[dict[str, Any]] | None = None,
    progress: decisions.Progress | None = None,
    last_rollback: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status fields that follow the children: phase, conditions, replicas. ``observed`` and
    ``blockers`` are the stable revision's and the canary's; ``conditions`` the list to merge into
    (default: the current one); ``progress`` the analysis of the revision under test (its counts
    go into the canary's Progressing message; at the failure limit, Progressing says Halted);
    ``last_rollback`` the rollback this pass writes, if any (default: the one in status), so that
    the phase RolledBack and the RolledBack condition are written together."""
    current = body.get("status") or {}
    stable_obs, canary_obs = observed
    phase, conds = st.compute_phase_and_conditions(stable_obs, plan_message)
    if blockers[0] is not None and revs.stable not in revs.failed:
        conds = _blocked_conditions(conds, phase, blockers[0])
    last_rb = (last_rollback if last_rollback is not None else current.get("lastRollback")) or {}
    if revs.stable in revs.failed:
        phase = Phase.FAILED
        conds = _failed_stable(conds, revs, current)
    elif revs.canary and canary_obs is not None:
        phase = phase if phase == Phase.FAILED else Phase.CANARY
        conds = _canary_conditions(conds, revs, stable_obs, canary_obs, blockers[1], progress)
    elif blocked:
        phase = Phase.ROLLED_BACK if phase == Phase.READY else phase
        conds = _replace(conds, st.Condition(ConditionType.PROGRESSING, "False", "RolledBack", blocked))
    if progress is not None and progress.halted and revs.stable not in revs.failed:
        conds = _replace(conds, _halted_condition(revs, progress))
    if blocked and last_rb:
        rolled = f"rolled back {last_rb.get('from')} -> {last_rb.get('to')}: {last_rb.get('reason')}"
        if f"revision {last_rb.get('from')} " not in blocked:
            # The spec names an older failed revision, not the last one rolled back: say that one.
            rolled = blocked
        conds.append(st.Condition(ConditionType.ROLLED_BACK, "True", "AnalysisFailed", rolled))
    elif not blocked:
        conds.append(
            st.Condition(
                ConditionType.ROLLED_BACK, "False", "NoRollback", "the spec's revision is not rolled back"
            )
        )
    generation = (body.get("metadata") or {}).get("generation")
    base = current.get("conditions") or [] if conditions is None else conditions
    replicas = stable_obs.replicas + (canary_obs.replicas if canary_obs else 0)
    ready = stable_obs.ready_replicas + (canary_obs.ready_replicas if canary_obs else 0)
    return {
        "phase": phase,
        "conditions": st.merge_conditions(list(base), conds, generation, now),
        "replicas": replicas,
        "readyReplicas": ready,
    }


PHASE_REASON = "Phase"


def decryption_events(current: Mapping[str, Any], patch: Mapping[str, Any]) -> list[Event]:
    """A Warning event when EngineReady newly says the weights could not be decrypted."""

    def engine(status: Mapping[str, Any]) -> Mapping[str, Any]:
        return next((c for c in status.get("conditions") or [] if c.get("type") == "EngineReady"), {})

    new, old = engine(patch), engine(current)
    if new.get("reason") != DECRYPTION_FAILED:
        return []
    if (old.get("reason"), old.get("message")) == (new.get("reason"), new.get("message")):
        return []
    return [("Warning", DECRYPTION_FAILED, str(new.get("message") or ""))]


def phase_events(current: Mapping[str, Any], patch: Mapping[str, Any]) -> list[Event]:
    """A Normal event for a phase change."""
    if patch.get("phase") and patch["phase"] != current.get("phase"):
        return [("Normal", PHASE_REASON, f"phase {current.get('phase') or '-'} -> {patch['phase']}")]
    return []
