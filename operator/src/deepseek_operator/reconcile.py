"""One reconcile of a DeepSeekDeployment: parse -> plan -> build -> apply -> observe -> status.

Handlers call :func:`reconcile` (after a spec change) and :func:`refresh_status`
(on a timer); both return the status fields to patch (empty when nothing changed)
and the events to post. Nothing here reads a clock except through ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deepseek_operator import catalog
from deepseek_operator import status as st
from deepseek_operator.api import names
from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.builders import model_repository as repo
from deepseek_operator.builders import multinode, serving
from deepseek_operator.errors import SpecError
from deepseek_operator.kube import client as kube
from deepseek_operator.kube.inventory import gather_inventory
from deepseek_operator.planning.placement import Refusal, catalog_nodes, plan_placement
from deepseek_operator.planning.plan import Plan
from deepseek_operator.planning.types import NodeInfo


@dataclass
class Outcome:
    """What a reconcile decided: status fields to patch and events to post (type, reason, message)."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Desired:
    """Everything the operator wants to exist for one resource."""

    spec: DeploymentSpec
    plan: Plan
    revision: str
    objects: list[dict[str, Any]]


def plan_for(body: dict[str, Any], spec: DeploymentSpec, nodes: list[NodeInfo] | None) -> Plan | Refusal:
    """Place ``spec`` on ``nodes`` (None: an idealised empty cluster of every catalog GPU)."""
    arch = catalog.arch_from_spec(spec.model)
    previous = ((body.get("status") or {}).get("placement") or {}).get("gpuProduct") or None
    return plan_placement(spec, arch, catalog_nodes() if nodes is None else nodes, previous)


def desired_state(body: dict[str, Any], nodes: list[NodeInfo] | None = None) -> Desired | Refusal:
    """Parse the body, place it, and build every child object (pure given ``nodes``; raises SpecError)."""
    spec = parse_spec(body.get("spec"))
    plan = plan_for(body, spec, nodes)
    if isinstance(plan, Refusal):
        return plan
    lay = serving.layout(spec, plan)  # raises SpecError when the spec cannot be laid out
    paths = repo.RepositoryPaths(
        engine_dir=lay.engine_dir, tokenizer_dir=lay.checkpoint_dir, model_dir=lay.checkpoint_dir
    )
    replicas = None if spec.autoscaling else spec.replicas
    objects: list[dict[str, Any]] = []
    if plan.nodes_per_replica > 1:
        objects.append(multinode.build_leader_worker_set(body, spec, plan, replicas))
    else:
        objects.append(
            serving.build_model_repository_configmap(body, repo.build_model_repository(spec, plan, paths))
        )
        if plan.runtime == "tensorrt-llm":
            objects.append(serving.build_engine_job(body, spec, plan))
        objects.append(
            serving.build_deployment(body, spec, plan, repo.repository_sources(plan.runtime), replicas)
        )
    multi = plan.nodes_per_replica > 1
    objects.append(serving.build_service(body, spec, leader_only=multi))
    objects.append(serving.build_pdb(body))
    if hpa := serving.build_hpa(body, spec, workload_kind=multinode.LWS_KIND if multi else "Deployment"):
        objects.append(hpa)
    return Desired(spec, plan, serving.revision_hash(spec, plan), objects)


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


def observe(body: dict[str, Any], runtime: str, revision: str, multinode_replica: bool) -> st.Observed:
    """Read the children's status from the cluster: the serving workload and the engine build Job."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    engine_needed = runtime == "tensorrt-llm" and not multinode_replica
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
    if multinode_replica:
        workload = kube.get(multinode.LWS_API_VERSION, multinode.LWS_KIND, ns, names.serving_name(name))
    else:
        workload = kube.get("apps/v1", "Deployment", ns, names.serving_name(name))
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
        if not multinode_replica
        else True,
        deployment_failed=failed,
        engine_needed=engine_needed,
        engine_succeeded=engine_ok,
        engine_failed=engine_failed,
    )


def compute_status(body: dict[str, Any], desired: Desired, observed: st.Observed, now: str) -> dict[str, Any]:
    """The whole status the operator wants, from the desired state and what was observed (pure)."""
    meta = body["metadata"]
    current = body.get("status") or {}
    phase, conds = st.compute_phase_and_conditions(observed, _plan_message(desired.plan))
    generation = meta.get("generation")
    return {
        "observedGeneration": generation,
        "phase": phase,
        "conditions": st.merge_conditions(current.get("conditions") or [], conds, generation, now),
        "placement": _placement(desired.plan),
        "revisions": {**(current.get("revisions") or {}), "stable": desired.revision},
        "replicas": observed.replicas,
        "readyReplicas": observed.ready_replicas,
        "endpoints": {
            "http": f"http://{names.serving_name(meta['name'])}.{meta['namespace']}.svc:{serving.HTTP_PORT}",
            "grpc": f"{names.serving_name(meta['name'])}.{meta['namespace']}.svc:{serving.GRPC_PORT}",
        },
    }


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


def _is_multinode(body: dict[str, Any]) -> bool:
    return int(((body.get("status") or {}).get("placement") or {}).get("nodesPerReplica") or 1) > 1


def reconcile(body: dict[str, Any], now: str) -> Outcome:
    """Place ``body``, apply its children and compute its status."""
    current = body.get("status") or {}
    meta = body["metadata"]
    try:
        nodes = gather_inventory(exclude_owner=(meta["namespace"], meta["name"]))
        desired = desired_state(body, nodes)
    except SpecError as e:
        out = Outcome(status=st.status_patch(current, invalid_spec_status(body, e, now)))
        if out.status:
            out.events.append(("Warning", "InvalidSpec", str(e)))
        return out
    if isinstance(desired, Refusal):
        out = Outcome(status=st.status_patch(current, not_placed_status(body, desired, now)))
        if out.status:
            out.events.append(("Warning", "NotPlaced", desired.message))
        return out
    for obj in desired.objects:
        kube.apply(obj)
    multi = desired.plan.nodes_per_replica > 1
    if not multi and _is_multinode(body):
        kube.delete(
            multinode.LWS_API_VERSION, multinode.LWS_KIND, meta["namespace"], names.serving_name(meta["name"])
        )
    elif multi and not _is_multinode(body) and current.get("placement"):
        kube.delete("apps/v1", "Deployment", meta["namespace"], names.serving_name(meta["name"]))
    observed = observe(body, desired.plan.runtime, desired.revision, multi)
    wanted = compute_status(body, desired, observed, now)
    out = Outcome(status=st.status_patch(current, wanted))
    if (current.get("revisions") or {}).get("stable") != desired.revision:
        out.events.append(
            ("Normal", "Applied", f"revision {desired.revision}: {_plan_message(desired.plan)}")
        )
    if out.status.get("phase") and out.status["phase"] != current.get("phase"):
        out.events.append(
            ("Normal", "Phase", f"phase {current.get('phase') or '-'} -> {out.status['phase']}")
        )
    return out


def refresh_status(body: dict[str, Any], now: str) -> Outcome:
    """The periodic check: follow the children into status; try placing again while Placed is False."""
    current = body.get("status") or {}
    if current.get("observedGeneration") != body["metadata"].get("generation"):
        return Outcome()  # a reconcile of the new generation is due; it writes the status
    conds = {c.get("type"): c for c in current.get("conditions") or []}
    if (conds.get("Placed") or {}).get("status") == "False":
        return reconcile(body, now)  # capacity may have been freed
    placement = current.get("placement") or {}
    revision = (current.get("revisions") or {}).get("stable")
    if not placement or not revision:
        return Outcome()
    observed = observe(body, str(placement.get("runtime")), str(revision), _is_multinode(body))
    phase, new_conds = st.compute_phase_and_conditions(
        observed, str((conds.get("Placed") or {}).get("message", ""))
    )
    generation = body["metadata"].get("generation")
    wanted = {
        "phase": phase,
        "conditions": st.merge_conditions(current.get("conditions") or [], new_conds, generation, now),
        "replicas": observed.replicas,
        "readyReplicas": observed.ready_replicas,
    }
    out = Outcome(status=st.status_patch(current, wanted))
    if out.status.get("phase") and out.status["phase"] != current.get("phase"):
        out.events.append(
            ("Normal", "Phase", f"phase {current.get('phase') or '-'} -> {out.status['phase']}")
        )
    return out
