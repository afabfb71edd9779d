"""One reconcile of a DeepSeekDeployment: parse -> plan -> record -> rollout step -> apply -> status,
and the periodic tick: traffic labels, observation, analysis and its decisions.

The rollout state is ``status.revisions``; every write of it is conditional on the
resourceVersion the decision was made on (:func:`kube.patch_status`), and a decision that moves
revisions (promote, roll back) is written before the workloads change, so that an operator
killed in between finds the decision on restart and finishes it instead of deciding twice.
Nothing here reads a clock except through ``now``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from deepseek_operator import catalog, metrics
from deepseek_operator import status as st
from deepseek_operator.api import names
from deepseek_operator.api.constants import LABEL_COMPONENT
from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.builders import model_repository as repo
from deepseek_operator.builders import multinode, serving
from deepseek_operator.errors import OperatorError, SpecError
from deepseek_operator.kube import client as kube
from deepseek_operator.kube.inventory import gather_inventory
from deepseek_operator.planning.inventory import replicas_that_fit
from deepseek_operator.planning.placement import Refusal, catalog_nodes, plan_placement
from deepseek_operator.planning.plan import Plan
from deepseek_operator.planning.types import NodeInfo
from deepseek_operator.rollout import analysis, decisions, golden
from deepseek_operator.rollout import revisions as rec
from deepseek_operator.rollout.decisions import Revisions

log = logging.getLogger(__name__)

Event = tuple[str, str, str]


@dataclass
class Outcome:
    """What a reconcile or tick decided: status fields still to patch (against ``body``, the latest
    version seen) and events to post (type, reason, message)."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Desired:
    """The spec's revision: parsed spec, plan, revision hash, and the objects of a first deployment."""

    spec: DeploymentSpec
    plan: Plan
    revision: str
    objects: list[dict[str, Any]]


def plan_for(body: dict[str, Any], spec: DeploymentSpec, nodes: list[NodeInfo] | None) -> Plan | Refusal:
    """Place ``spec`` on ``nodes`` (None: an idealised empty cluster of every catalog GPU)."""
    arch = catalog.arch_from_spec(spec.model)
    previous = ((body.get("status") or {}).get("placement") or {}).get("gpuProduct") or None
    return plan_placement(spec, arch, catalog_nodes() if nodes is None else nodes, previous)


def workload_kind(plan: Plan) -> tuple[str, str]:
    """(apiVersion, kind) of a revision's serving workload."""
    if plan.nodes_per_replica > 1:
        return multinode.LWS_API_VERSION, multinode.LWS_KIND
    return "apps/v1", "Deployment"


def revision_objects(
    owner: dict[str, Any], spec: DeploymentSpec, plan: Plan, revision: str
) -> list[dict[str, Any]]:
    """One revision's objects: its model repository, engine build Job and workload (replica counts
    left out: they are set through the scale field manager)."""
    lay = serving.layout(spec, plan)  # raises SpecError when the spec cannot be laid out
    if plan.nodes_per_replica > 1:
        return [multinode.build_leader_worker_set(owner, spec, plan, None)]
    paths = repo.RepositoryPaths(
        engine_dir=lay.engine_dir, tokenizer_dir=lay.checkpoint_dir, model_dir=lay.checkpoint_dir
    )
    objects = [
        serving.build_model_repository_configmap(
            owner, repo.build_model_repository(spec, plan, paths), revision
        )
    ]
    if plan.runtime == "tensorrt-llm":
        objects.append(serving.build_engine_job(owner, spec, plan))
    objects.append(serving.build_deployment(owner, spec, plan, repo.repository_sources(plan.runtime), None))
    return objects


def shared_objects(
    owner: dict[str, Any], spec: DeploymentSpec, stable: str, stable_plan: Plan, lent: int = 0
) -> list[dict[str, Any]]:
    """The objects all revisions share: the Service, the PDB, and the HPA on the stable workload."""
    multi = stable_plan.nodes_per_replica > 1
    objects = [serving.build_service(owner, spec, leader_only=multi), serving.build_pdb(owner)]
    target = names.workload_name(owner["metadata"]["name"], stable)
    if hpa := serving.build_hpa(owner, spec, target, workload_kind(stable_plan)[1], lent):
        objects.append(hpa)
    return objects


def desired_state(body: dict[str, Any], nodes: list[NodeInfo] | None = None) -> Desired | Refusal:
    """Parse the body, place it, and build every object of the spec's revision as a first deployment
    would have them (pure given ``nodes``; raises SpecError)."""
    spec = parse_spec(body.get("spec"))
    plan = plan_for(body, spec, nodes)
    if isinstance(plan, Refusal):
        return plan
    revision = serving.revision_hash(spec, plan)
    objects = revision_objects(body, spec, plan, revision) + shared_objects(body, spec, revision, plan)
    return Desired(spec, plan, revision, objects)


def _plan_message(plan: Plan) -> str:
    gpu = plan.gpu_product or "any GPU"
    parallel = f"TP {plan.tensor_parallel}, PP {plan.pipeline_parallel}"
    return (
        f"{plan.gpus_per_replica} x {gpu} per replica ({parallel}), "
        f"{plan.precision}, {plan.runtime} runtime, ~{plan.estimated_gpu_memory_gib} GiB per GPU, "
        f"max batch {plan.max_batch_size}"
    )


def _placement(plan: Plan) -> dict[str, Any]:
    return {
        "gpuProduct": plan.gpu_product or "",
        "gpusPerReplica": plan.gpus_per_replica,
        "tensorParallel": plan.tensor_parallel,
        "pipelineParallel": plan.pipeline_parallel,
        "nodesPerReplica": plan.nodes_per_replica,
        "estimatedGpuMemoryGiB": plan.estimated_gpu_memory_gib,
        "fabric": plan.fabric,
        "runtime": plan.runtime,
        "precision": plan.precision,
        "maxBatchSize": plan.max_batch_size,
    }


# --- revision records ------------------------------------------------------------------------


def _records(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    meta = body["metadata"]
    items = kube.list_owned(
        rec.API_VERSION, rec.KIND, meta["namespace"], f"{names.DEPLOYMENT_LABEL}={meta['name']}"
    )
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        revision = ((item.get("metadata") or {}).get("labels") or {}).get(names.REVISION_LABEL)
        if revision:
            out[str(revision)] = item
    return out


def ensure_record(body: dict[str, Any], desired: Desired, records: dict[str, dict[str, Any]]) -> None:
    """Record the spec's revision in a ControllerRevision, once."""
    if desired.revision in records:
        return
    obj = rec.build_controller_revision(
        body, desired.revision, rec.next_number(list(records.values())), body.get("spec") or {}, desired.plan
    )
    records[desired.revision] = kube.apply(obj)


def load_revision(
    body: dict[str, Any], revision: str, records: dict[str, dict[str, Any]]
) -> tuple[DeploymentSpec, Plan]:
    """The spec and plan to build ``revision`` with, from its record."""
    record = records.get(revision)
    if record is None:
        raise OperatorError(
            f"revision {revision} has no ControllerRevision record; it cannot be rebuilt (was it deleted?)"
        )
    return rec.spec_for_revision(record, body.get("spec") or {}), rec.plan_for_revision(record)


# --- applying the rollout --------------------------------------------------------------------


def _scale_of(api_version: str, kind: str, namespace: str, name: str) -> int | None:
    obj = kube.get(api_version, kind, namespace, name)
    if obj is None:
        return None
    return int((obj.get("spec") or {}).get("replicas") or 0)


def apply_workloads(
    body: dict[str, Any],
    revs: Revisions,
    records: dict[str, dict[str, Any]],
    handover: int | None = None,
) -> None:
    """Make the cluster run what ``revs`` says: each live revision's objects at its size, the shared
    objects on the stable revision, stale workloads removed. ``handover`` is the replica count a
    newly stable revision starts with under an HPA (the count the HPA had reached)."""
    meta = body["metadata"]
    ns, owner = meta["namespace"], meta["name"]
    now_spec = parse_spec(body.get("spec"))
    rollout = now_spec.rollout
    wanted = decisions.plan_workloads(
        revs,
        None if now_spec.autoscaling else now_spec.replicas,
        rollout.canary_replicas,
        rollout.standby_replicas,
    )
    live: set[str] = set()
    stable_plan: Plan | None = None
    for w in wanted:
        spec, plan = load_revision(body, w.revision, records)
        live.add(w.revision)
        if w.role == decisions.ROLE_STABLE:
            stable_plan = plan
        for obj in revision_objects(body, spec, plan, w.revision):
            kube.apply(obj)
        api_version, kind = workload_kind(plan)
        name = names.workload_name(owner, w.revision)
        if w.replicas is not None:
            kube.apply_scale(api_version, kind, ns, name, w.replicas)
        elif handover is not None:
            kube.apply_scale(api_version, kind, ns, name, handover)
    if stable_plan is not None:
        for obj in shared_objects(body, now_spec, revs.stable, stable_plan, revs.lent):
            kube.apply(obj)
        if now_spec.autoscaling is None:
            kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", ns, names.serving_name(owner))
    selector = f"{names.DEPLOYMENT_LABEL}={owner}"
    for api_version, kind in (
        ("apps/v1", "Deployment"),
        (multinode.LWS_API_VERSION, multinode.LWS_KIND),
        ("v1", "ConfigMap"),
    ):
        try:
            items = kube.list_owned(api_version, kind, ns, selector)
        except OperatorError:
            continue  # no LeaderWorkerSet API in this cluster
        for item in items:
            labels = (item.get("metadata") or {}).get("labels") or {}
            revision = labels.get(names.REVISION_LABEL)
            if revision and revision not in live:
                kube.delete(api_version, kind, ns, item["metadata"]["name"])
    for old in rec.prunable(list(records.values()), live | set(revs.failed[-3:])):
        kube.delete(rec.API_VERSION, rec.KIND, ns, old["metadata"]["name"])


def sync_traffic(body: dict[str, Any], revs: Revisions) -> int:
    """Label the pods of the stable and canary revisions for the Service and unlabel the others
    (a warm standby); returns how many pods changed."""
    meta = body["metadata"]
    ns, owner = meta["namespace"], meta["name"]
    serving_revs = {r for r in (revs.stable, revs.canary) if r}
    changed = 0
    for pod in kube.list_owned("v1", "Pod", ns, f"{names.DEPLOYMENT_LABEL}={owner}"):
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_COMPONENT) != names.COMPONENT_SERVING:
            continue
        want = names.TRAFFIC_ON if labels.get(names.REVISION_LABEL) in serving_revs else None
        if labels.get(names.TRAFFIC_LABEL) != want:
            kube.patch_labels("v1", "Pod", ns, pod["metadata"]["name"], {names.TRAFFIC_LABEL: want})
            changed += 1
    return changed


def _capacity_lent(body: dict[str, Any], spec: DeploymentSpec, plan: Plan, canary: str) -> int:
    """How many stable replicas a new canary must replace: 0 when the free GPUs hold it."""
    meta = body["metadata"]
    ns, owner = meta["namespace"], meta["name"]

    def own_canary_pod(pod: dict[str, Any]) -> bool:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return (
            (pod.get("metadata") or {}).get("namespace") == ns
            and labels.get(names.DEPLOYMENT_LABEL) == owner
            and labels.get(names.REVISION_LABEL) == canary
        )

    fits = replicas_that_fit(gather_inventory(skip_pod=own_canary_pod), plan)
    return max(spec.rollout.canary_replicas - fits, 0)


# --- observation and status --------------------------------------------------------------------


def observe(body: dict[str, Any], revision: str, plan: Plan) -> st.Observed:
    """Read one revision's children from the cluster: its workload and its engine build Job."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    multi = plan.nodes_per_replica > 1
    engine_needed = plan.runtime == "tensorrt-llm" and not multi
    engine_ok, engine_failed = False, None
    if engine_needed:
        selector = f"{names.DEPLOYMENT_LABEL}={name},{names.REVISION_LABEL}={revision}"
        for job in kube.list_owned("batch/v1", "Job", ns, selector):
            for cond in (job.get("status") or {}).get("conditions", []):
                if cond.get("type") == "Complete" and cond.get("status") == "True":
                    engine_ok = True
                if cond.get("type") == "Failed" and cond.get("status") == "True":
                    engine_failed = (
                        f"engine build Job {job['metadata']['name']} failed: {cond.get('message', '')}"
                    )
    api_version, kind = workload_kind(plan)
    workload = kube.get(api_version, kind, ns, names.workload_name(name, revision))
    if workload is None:
        return st.Observed(
            engine_needed=engine_needed, engine_succeeded=engine_ok, engine_failed=engine_failed
        )
    wstatus = workload.get("status") or {}
    failed = None
    for cond in wstatus.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failed = cond.get("message", "the serving Deployment exceeded its progress deadline")
    return st.Observed(
        deployment_found=True,
        desired_replicas=int((workload.get("spec") or {}).get("replicas", 1)),
        replicas=int(wstatus.get("replicas", 0)),
        ready_replicas=int(wstatus.get("readyReplicas", 0)),
        updated_replicas=int(wstatus.get("updatedReplicas", 0)),
        deployment_generation_observed=wstatus.get("observedGeneration", 0)
        >= workload["metadata"].get("generation", 0)
        if not multi
        else True,
        deployment_failed=failed,
        engine_needed=engine_needed,
        engine_succeeded=engine_ok,
        engine_failed=engine_failed,
    )


def rollout_status(
    body: dict[str, Any],
    revs: Revisions,
    stable_obs: st.Observed,
    canary_obs: st.Observed | None,
    plan_message: str,
    blocked: str,
    now: str,
) -> dict[str, Any]:
    """The status fields that follow the children: phase, conditions, replicas (pure)."""
    meta = body["metadata"]
    current = body.get("status") or {}
    phase, conds = st.compute_phase_and_conditions(stable_obs, plan_message)
    last_rb = current.get("lastRollback") or {}
    if revs.stable in revs.failed:
        reason = (current.get("analysis") or {}).get("message") or "analysis failed"
        phase = "Failed"
        conds = [c for c in conds if c.type != "Ready"]
        conds.append(
            st.Condition(
                "Ready",
                "False",
                "AnalysisFailed",
                f"revision {revs.stable} failed analysis and there is no earlier revision to roll back "
                f"to: {reason}",
            )
        )
    elif revs.canary and canary_obs is not None:
        if phase != "Failed":
            phase = "Canary"
        serving = stable_obs.ready_replicas + canary_obs.ready_replicas
        if stable_obs.desired_replicas == 0 and serving:
            # The canary took the only stable replica's place (no free GPUs): it is what serves.
            conds = [c for c in conds if c.type != "Ready"]
            conds.append(
                st.Condition("Ready", "True", "CanaryServing", f"{serving} replica(s) of the canary serving")
            )
        mode = "replacing a stable replica (no free GPUs)" if revs.lent else "beside the stable replicas"
        conds = [c for c in conds if c.type != "Progressing"]
        conds.append(
            st.Condition(
                "Progressing",
                "True",
                "Canary",
                f"canary {revs.canary}: {canary_obs.ready_replicas}/{canary_obs.desired_replicas} ready, "
                f"{mode}; stable {revs.stable}",
            )
        )
    elif blocked:
        if phase == "Ready":
            phase = "RolledBack"
        conds = [c for c in conds if c.type != "Progressing"]
        conds.append(st.Condition("Progressing", "False", "RolledBack", blocked))
    if blocked and last_rb:
        conds.append(
            st.Condition(
                "RolledBack",
                "True",
                "AnalysisFailed",
                f"rolled back {last_rb.get('from')} -> {last_rb.get('to')}: {last_rb.get('reason')}",
            )
        )
    elif not blocked:
        conds.append(
            st.Condition("RolledBack", "False", "NoRollback", "the spec's revision is not rolled back")
        )
    generation = meta.get("generation")
    replicas = stable_obs.replicas + (canary_obs.replicas if canary_obs else 0)
    ready = stable_obs.ready_replicas + (canary_obs.ready_replicas if canary_obs else 0)
    return {
        "phase": phase,
        "conditions": st.merge_conditions(current.get("conditions") or [], conds, generation, now),
        "replicas": replicas,
        "readyReplicas": ready,
    }


def _endpoints(body: dict[str, Any]) -> dict[str, str]:
    meta = body["metadata"]
    host = f"{names.serving_name(meta['name'])}.{meta['namespace']}.svc"
    return {"http": f"http://{host}:{serving.HTTP_PORT}", "grpc": f"{host}:{serving.GRPC_PORT}"}


def invalid_spec_status(body: dict[str, Any], error: SpecError, now: str) -> dict[str, Any]:
    """Status for a spec the operator cannot serve. Children are left as they are: when an earlier
    revision is serving it keeps serving (phase Degraded, Ready unchanged); otherwise phase Failed."""
    current = body.get("status") or {}
    generation = body["metadata"].get("generation")
    serving_now = int(current.get("readyReplicas") or 0) > 0
    conds = [st.Condition("Progressing", "False", "InvalidSpec", str(error))]
    if not serving_now:
        conds.append(st.Condition("Ready", "False", "InvalidSpec", str(error)))
    return {
        "observedGeneration": generation,
        "phase": "Degraded" if serving_now else "Failed",
        "conditions": st.merge_conditions(current.get("conditions") or [], conds, generation, now),
    }


def not_placed_status(body: dict[str, Any], refusal: Refusal, now: str) -> dict[str, Any]:
    """Status for a spec that cannot be placed: the numbers in Placed; what serves keeps serving."""
    current = body.get("status") or {}
    generation = body["metadata"].get("generation")
    serving_now = int(current.get("readyReplicas") or 0) > 0
    conds = [st.Condition("Placed", "False", refusal.reason, refusal.message)]
    if not serving_now:
        conds.append(st.Condition("Ready", "False", "NotPlaced", refusal.message))
    return {
        "observedGeneration": generation,
        "phase": "Degraded" if serving_now else "Pending",
        "conditions": st.merge_conditions(current.get("conditions") or [], conds, generation, now),
    }


def _write(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """Patch status now (conditional on ``body``'s resourceVersion); the body as stored after."""
    return kube.patch_status(body, status)


def _retry_annotation(body: dict[str, Any]) -> str:
    return str(((body.get("metadata") or {}).get("annotations") or {}).get(names.RETRY_ANNOTATION) or "")


def _phase_events(current: dict[str, Any], status: dict[str, Any]) -> list[Event]:
    if status.get("phase") and status["phase"] != current.get("phase"):
        return [("Normal", "Phase", f"phase {current.get('phase') or '-'} -> {status['phase']}")]
    return []


def reconcile(body: dict[str, Any], now: str) -> Outcome:
    """After a spec change (or at operator start): place the spec's revision, record it, take the
    rollout step towards it, apply the workloads and compute status."""
    current = body.get("status") or {}
    meta = body["metadata"]
    try:
        nodes = gather_inventory(exclude_owner=(meta["namespace"], meta["name"]))
        desired = desired_state(body, nodes)
    except SpecError as e:
        out = Outcome(status=st.status_patch(current, invalid_spec_status(body, e, now)), body=body)
        if out.status:
            out.events.append(("Warning", "InvalidSpec", str(e)))
        return out
    if isinstance(desired, Refusal):
        out = Outcome(status=st.status_patch(current, not_placed_status(body, desired, now)), body=body)
        if out.status:
            out.events.append(("Warning", "NotPlaced", desired.message))
        return out
    records = _records(body)
    ensure_record(body, desired, records)
    revs = Revisions.from_status(current.get("revisions"))
    step = decisions.plan_step(revs, desired.revision, _retry_annotation(body))
    new = step.revisions
    events: list[Event] = list(step.events)
    if step.new_canary:
        lent = _capacity_lent(body, desired.spec, desired.plan, desired.revision)
        if lent and not desired.spec.autoscaling:
            lent = min(lent, desired.spec.replicas)
        new = replace(new, lent=lent)
        how = (
            f"no free GPUs for it: it replaces {lent} of the stable replicas"
            if lent
            else f"beside the {revs.stable} replicas"
        )
        events.append(("Normal", "CanaryStarted", f"canary {desired.revision} started, {how}"))
    if desired.revision not in (revs.stable, revs.canary) and not step.blocked:
        events.append(("Normal", "Applied", f"revision {desired.revision}: {_plan_message(desired.plan)}"))
    if new != revs:
        body = _write(body, {"revisions": new.to_status()})
    apply_workloads(body, new, records)
    sync_traffic(body, new)
    return _refresh(body, new, records, desired.plan, step.blocked, now, events, plan_changed=True)


def _refresh(
    body: dict[str, Any],
    revs: Revisions,
    records: dict[str, dict[str, Any]],
    desired_plan: Plan | None,
    blocked: str,
    now: str,
    events: list[Event],
    plan_changed: bool = False,
) -> Outcome:
    current = body.get("status") or {}
    _, stable_plan = load_revision(body, revs.stable, records)
    stable_obs = observe(body, revs.stable, stable_plan)
    canary_obs = None
    if revs.canary:
        _, canary_plan = load_revision(body, revs.canary, records)
        canary_obs = observe(body, revs.canary, canary_plan)
    conds = {c.get("type"): c for c in current.get("conditions") or []}
    message = (
        _plan_message(desired_plan) if desired_plan else str((conds.get("Placed") or {}).get("message", ""))
    )
    wanted = rollout_status(body, revs, stable_obs, canary_obs, message, blocked, now)
    if plan_changed:
        wanted.update(
            {
                "observedGeneration": body["metadata"].get("generation"),
                "placement": _placement(stable_plan),
                "endpoints": _endpoints(body),
            }
        )
    out = Outcome(status=st.status_patch(current, wanted), events=events, body=body)
    out.events.extend(_phase_events(current, out.status))
    return out


# --- the periodic tick: analysis and its decisions --------------------------------------------


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def iso(when: dt.datetime) -> str:
    """RFC 3339 with milliseconds, UTC."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def thresholds(spec: DeploymentSpec) -> decisions.Thresholds:
    """The analysis thresholds of ``spec``."""
    a = spec.rollout.analysis
    return decisions.Thresholds(
        max_p99_latency_ms=a.max_p99_latency_ms,
        max_error_rate=a.max_error_rate,
        min_score=a.accuracy.min_score,
        max_drop=a.accuracy.max_drop,
        successful_analyses=spec.rollout.successful_analyses,
        failure_limit=a.failure_limit,
        auto_rollback=spec.rollout.auto_rollback,
        golden_set=a.accuracy.golden_set is not None,
    )


def _analysis_condition(verdict: str, reasons: tuple[str, ...], revision: str) -> st.Condition:
    text = "; ".join(reasons)
    if verdict == decisions.PASS:
        return st.Condition("AnalysisPassing", "True", "Passed", f"revision {revision} passed analysis")
    if verdict == decisions.FAIL:
        return st.Condition("AnalysisPassing", "False", "Failed", f"revision {revision}: {text}")
    reason = "GoldenSetInvalid" if any(r.startswith("golden set") for r in reasons) else "Inconclusive"
    return st.Condition("AnalysisPassing", "Unknown", reason, f"revision {revision}: {text}")


def analyse(
    body: dict[str, Any], revs: Revisions, spec: DeploymentSpec, runtimes: dict[str, str], now: dt.datetime
) -> tuple[dict[str, Any], decisions.Decision, list[Event], str]:
    """Run one analysis of the revision under test (the canary, else the stable one) and decide.
    Returns the new ``status.analysis``, the decision, events, and the subject's role."""
    meta = body["metadata"]
    ns, owner = meta["namespace"], meta["name"]
    current = (body.get("status") or {}).get("analysis") or {}
    t = thresholds(spec)
    role = decisions.ROLE_CANARY if revs.canary else decisions.ROLE_STABLE
    subject = revs.canary or revs.stable
    events: list[Event] = []
    cases: tuple[golden.GoldenCase, ...] | None = None
    golden_problem = ""
    try:
        cases = analysis.load_golden_set(spec, ns)
    except golden.GoldenSetError as e:
        golden_problem = f"golden set invalid: {e}"
    counters = current.get("counters") or {}
    if golden_problem:
        m = decisions.Measurement(problems=(golden_problem,))
        kept = analysis.Counters.from_status(counters.get(subject))
    else:
        m, kept = analysis.measure(
            ns,
            owner,
            subject,
            runtimes[subject],
            spec,
            cases,
            analysis.Counters.from_status(counters.get(subject)),
        )
        if cases is not None and m.accuracy is not None:
            baseline = revs.baseline_accuracy
            if role == decisions.ROLE_CANARY:
                # The serving revision's score now, so that a drift both share is not blamed on the canary.
                now_score = analysis.score_only(ns, owner, revs.stable, runtimes[revs.stable], spec, cases)
                baseline = now_score if now_score is not None else baseline
            m = replace(m, baseline_accuracy=baseline)
    verdict, reasons = decisions.evaluate(m, t)
    entry = decisions.record(subject, role, revs.epoch, iso(now), verdict, reasons, m)
    history = decisions.append_history(current.get("history") or [], entry, t)
    decision = decisions.decide_rollout(revs, history, t)
    last_verdict, n = decisions.streak(history, subject, role, revs.epoch)
    new_counters = {k: v for k, v in counters.items() if k in (revs.stable, revs.canary)}
    if kept is not None:
        new_counters[subject] = kept.to_status()
    status_analysis = {
        "revision": subject,
        "role": role,
        "verdict": verdict,
        "message": "; ".join(reasons) if reasons else "all figures within their thresholds",
        "p99LatencyMs": entry["p99LatencyMs"],
        "latencySource": entry["latencySource"],
        "errorRate": entry["errorRate"],
        "requests": entry["requests"],
        "accuracy": entry["accuracy"],
        "baselineAccuracy": entry["baselineAccuracy"],
        "consecutiveFailures": n if last_verdict == decisions.FAIL else 0,
        "consecutiveSuccesses": n if last_verdict == decisions.PASS else 0,
        "lastRunTime": iso(now),
        "history": history,
        "counters": new_counters,
    }
    metrics.ANALYSES.labels(ns, owner, verdict, role).inc()
    if (
        golden_problem
        and (body.get("status") or {}).get("analysis", {}).get("message") != status_analysis["message"]
    ):
        events.append(("Warning", "GoldenSetInvalid", golden_problem))
    return status_analysis, decision, events, role


def _figures(a: dict[str, Any]) -> str:
    return (
        f"p99 {a['p99LatencyMs']} ms ({a['latencySource'] or 'no source'}), error rate {a['errorRate']}, "
        f"score {a['accuracy']}, baseline {a['baselineAccuracy']}"
    )


def _drift_seconds(history: list[dict[str, Any]], revision: str, now: dt.datetime) -> float | None:
    first = None
    for entry in reversed(history):
        if entry.get("revision") != revision:
            continue
        if entry.get("verdict") == decisions.PASS:
            break
        if entry.get("verdict") == decisions.FAIL:
            first = entry.get("time")
    start = _parse_time(first)
    return None if start is None else (now - start).total_seconds()


def tick(body: dict[str, Any], now: dt.datetime, analysis_only: bool = False) -> Outcome:
    """The periodic work for one resource: traffic labels, analysis when due (and the decision it
    leads to), and status following the children. ``analysis_only`` skips the observation when
    no analysis is due (the caller observes less often than it analyses)."""
    current = body.get("status") or {}
    stamp = iso(now)
    if current.get("observedGeneration") != body["metadata"].get("generation"):
        return Outcome(body=body)  # a reconcile of the new generation is due; it writes the status
    conds = {c.get("type"): c for c in current.get("conditions") or []}
    if (conds.get("Placed") or {}).get("status") == "False":
        return reconcile(body, stamp) if not analysis_only else Outcome(body=body)
    revs = Revisions.from_status(current.get("revisions"))
    if not revs.stable:
        return Outcome(body=body)
    retry = _retry_annotation(body)
    if retry and retry != revs.retry and not analysis_only:
        return reconcile(body, stamp)  # the retry annotation is new: a rolled-back revision may start again
    try:
        spec = parse_spec(body.get("spec"))
    except SpecError:
        return Outcome(body=body)
    last = _parse_time((current.get("analysis") or {}).get("lastRunTime"))
    uid = str(body["metadata"].get("uid"))
    if uid in _unrecorded_runs and (last is None or _unrecorded_runs[uid] > last):
        last = _unrecorded_runs[uid]
    due = last is None or (now - last).total_seconds() >= spec.rollout.analysis.interval_seconds - 0.05
    if analysis_only and not due:
        return Outcome(body=body)
    records = _records(body)
    events: list[Event] = []
    if due and revs.stable not in revs.failed:
        runtimes = {r: load_revision(body, r, records)[1].runtime for r in (revs.stable, revs.canary) if r}
        status_analysis, decision, evs, role = analyse(body, revs, spec, runtimes, now)
        events.extend(evs)
        if _repeats(current.get("analysis") or {}, status_analysis) and decision.action == "none":
            # The same inconclusive result again (e.g. a revision that cannot be reached): not
            # worth a write every interval; the next run is scheduled from memory.
            _unrecorded_runs[uid] = now
            sync_traffic(body, revs)
            return (
                Outcome(body=body)
                if analysis_only
                else _refresh(
                    body,
                    revs,
                    records,
                    None,
                    decisions.blocked_message(revs, _spec_revision(body, records)),
                    stamp,
                    events,
                )
            )
        _unrecorded_runs.pop(uid, None)
        patch: dict[str, Any] = {"analysis": status_analysis}
        cond = _analysis_condition(
            status_analysis["verdict"],
            tuple(status_analysis["history"][-1]["reasons"]),
            status_analysis["revision"],
        )
        handover = None
        if decision.action in ("promote", "rollback", "fail", "verify"):
            patch["revisions"] = decision.revisions.to_status()
        if decision.action == "rollback":
            patch["lastRollback"] = {
                "from": decision.rolled_back_from,
                "to": decision.rolled_back_to,
                "reason": decision.reason,
                "time": stamp,
                "role": role,
            }
            figures = status_analysis
            events.append(
                (
                    "Warning",
                    "RolledBack",
                    f"rolled back {decision.rolled_back_from} -> {decision.rolled_back_to}: "
                    f"{decision.reason} ({_figures(figures)})",
                )
            )
            for kind in metrics.reason_kinds(tuple(status_analysis["history"][-1]["reasons"])):
                metrics.ROLLBACKS.labels(
                    body["metadata"]["namespace"], body["metadata"]["name"], kind, role
                ).inc()
            drift = _drift_seconds(status_analysis["history"], decision.rolled_back_from, now)
            if drift is not None:
                metrics.DRIFT_TO_ROLLBACK.labels(
                    body["metadata"]["namespace"], body["metadata"]["name"]
                ).observe(drift)
        elif decision.action == "promote":
            events.append(
                (
                    "Normal",
                    "Promoted",
                    f"canary {revs.canary} promoted: {decision.reason} ({_figures(status_analysis)})",
                )
            )
            metrics.PROMOTIONS.labels(body["metadata"]["namespace"], body["metadata"]["name"]).inc()
        elif decision.action == "fail":
            events.append(("Warning", "AnalysisFailed", f"revision {revs.stable} failed: {decision.reason}"))
        elif decision.action == "halt":
            events.append(
                (
                    "Warning",
                    "AnalysisFailing",
                    f"revision {decision.revisions.canary or decision.revisions.stable}: {decision.reason}; "
                    "not rolled back (autoRollback is false or there is no earlier revision)",
                )
            )
        if decision.action in ("promote", "rollback"):
            handover = _handover(body, revs, decision.revisions, records, spec)
        patch["conditions"] = st.merge_conditions(
            current.get("conditions") or [], [cond], body["metadata"].get("generation"), stamp
        )
        body = _write(body, patch)  # the decision is durable before anything moves
        if decision.revisions != revs:
            revs = decision.revisions
            try:
                apply_workloads(body, revs, records, handover)
            except OperatorError as e:
                # The decision stands (the next tick applies it again); its events must still be
                # posted.
                _pending_apply.add(uid)
                events.append(("Warning", "TickError", f"applying the decision: {e}"))
                return Outcome(events=events, body=body)
    elif uid in _pending_apply and not analysis_only:
        apply_workloads(body, revs, records)
        _pending_apply.discard(uid)
    sync_traffic(body, revs)
    blocked = ""
    spec_revision = _spec_revision(body, records)
    if spec_revision:
        blocked = decisions.blocked_message(revs, spec_revision)
    return _refresh(body, revs, records, None, blocked, stamp, events)


# uid -> when an analysis ran whose result was not written (see tick); lost on restart, which
# only means one more analysis.
_unrecorded_runs: dict[str, dt.datetime] = {}
# uids whose last decision was written but not applied (an API error in between).
_pending_apply: set[str] = set()


def _repeats(previous: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` is an inconclusive analysis saying what the last recorded one said."""
    return (
        new.get("verdict") == decisions.INCONCLUSIVE
        and previous.get("verdict") == decisions.INCONCLUSIVE
        and previous.get("revision") == new.get("revision")
        and previous.get("role") == new.get("role")
        and previous.get("message") == new.get("message")
    )


def _spec_revision(body: dict[str, Any], records: dict[str, dict[str, Any]]) -> str:
    """The revision the spec names: the newest record whose pod sections equal the spec's."""
    spec = body.get("spec") or {}
    wanted = {k: spec[k] for k in rec.POD_SECTIONS if k in spec}
    best, number = "", -1
    for revision, record in records.items():
        if ((record.get("data") or {}).get("spec") or {}) == wanted and int(
            record.get("revision") or 0
        ) > number:
            best, number = revision, int(record.get("revision") or 0)
    return best


def _handover(
    body: dict[str, Any],
    old: Revisions,
    new: Revisions,
    records: dict[str, dict[str, Any]],
    spec: DeploymentSpec,
) -> int | None:
    """Under an HPA, the replica count the new stable revision starts with: what the HPA had reached
    on the old stable revision (plus any replicas the canary had replaced)."""
    if spec.autoscaling is None or not old.stable:
        return None
    _, plan = load_revision(body, old.stable, records)
    api_version, kind = workload_kind(plan)
    reached = _scale_of(
        api_version,
        kind,
        body["metadata"]["namespace"],
        names.workload_name(body["metadata"]["name"], old.stable),
    )
    if reached is None:
        return spec.autoscaling.min_replicas
    return max(reached + old.lent, spec.autoscaling.min_replicas)
