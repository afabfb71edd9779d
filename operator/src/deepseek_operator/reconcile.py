"""One reconcile of a DeepSeekDeployment: parse -> plan -> build -> apply -> observe -> status.

Handlers call :func:`reconcile` (after a spec change) and :func:`refresh_status`
(on a timer); both return the status fields to patch (empty when nothing changed)
and the events to post. Nothing here reads a clock except through ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deepseek_operator import status as st
from deepseek_operator.api import names
from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.builders import model_repository as repo
from deepseek_operator.builders import serving
from deepseek_operator.errors import SpecError
from deepseek_operator.kube import client as kube
from deepseek_operator.planning.plan import Plan, plan_deployment


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


def desired_state(body: dict[str, Any]) -> Desired:
    """Parse the body and build every child object (pure; raises :class:`SpecError`)."""
    spec = parse_spec(body.get("spec"))
    plan = plan_deployment(spec)
    lay = serving.layout(spec, plan)  # raises SpecError when the spec cannot be laid out
    paths = repo.RepositoryPaths(
        engine_dir=lay.engine_dir, tokenizer_dir=lay.checkpoint_dir, model_dir=lay.checkpoint_dir
    )
    files = repo.build_model_repository(spec, plan, paths)
    objects = [serving.build_model_repository_configmap(body, files)]
    if plan.runtime == "tensorrt-llm":
        objects.append(serving.build_engine_job(body, spec, plan))
    replicas = None if spec.autoscaling else spec.replicas
    objects.append(
        serving.build_deployment(body, spec, plan, repo.repository_sources(plan.runtime), replicas)
    )
    objects.append(serving.build_service(body, spec))
    objects.append(serving.build_pdb(body))
    if hpa := serving.build_hpa(body, spec):
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


def observe(body: dict[str, Any], desired: Desired) -> st.Observed:
    """Read the children's status from the cluster."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    dep = kube.get("apps/v1", "Deployment", ns, names.serving_name(name))
    engine_needed = desired.plan.runtime == "tensorrt-llm"
    engine_ok, engine_failed = False, None
    if engine_needed:
        job_obj = next(o for o in desired.objects if o["kind"] == "Job")
        job = kube.get("batch/v1", "Job", ns, job_obj["metadata"]["name"])
        for cond in ((job or {}).get("status") or {}).get("conditions", []):
            if cond.get("type") == "Complete" and cond.get("status") == "True":
                engine_ok = True
            if cond.get("type") == "Failed" and cond.get("status") == "True":
                engine_failed = (
                    f"engine build Job {job_obj['metadata']['name']} failed: {cond.get('message', '')}"
                )
    if dep is None:
        return st.Observed(
            engine_needed=engine_needed, engine_succeeded=engine_ok, engine_failed=engine_failed
        )
    dstatus = dep.get("status") or {}
    failed = None
    for cond in dstatus.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failed = cond.get("message", "the serving Deployment exceeded its progress deadline")
    return st.Observed(
        deployment_found=True,
        desired_replicas=int((dep.get("spec") or {}).get("replicas", 1)),
        replicas=int(dstatus.get("replicas", 0)),
        ready_replicas=int(dstatus.get("readyReplicas", 0)),
        updated_replicas=int(dstatus.get("updatedReplicas", 0)),
        deployment_generation_observed=dstatus.get("observedGeneration", 0)
        >= dep["metadata"].get("generation", 0),
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


def reconcile(body: dict[str, Any], now: str) -> Outcome:
    """Apply the desired children of ``body`` and compute its status."""
    current = body.get("status") or {}
    try:
        desired = desired_state(body)
    except SpecError as e:
        out = Outcome(status=st.status_patch(current, invalid_spec_status(body, e, now)))
        if out.status:
            out.events.append(("Warning", "InvalidSpec", str(e)))
        return out
    for obj in desired.objects:
        kube.apply(obj)
    wanted = compute_status(body, desired, observe(body, desired), now)
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
    """Recompute status from the children without writing them (the periodic check)."""
    current = body.get("status") or {}
    if current.get("observedGeneration") != body["metadata"].get("generation"):
        return Outcome()  # a reconcile of the new generation is due; it writes the status
    try:
        desired = desired_state(body)
    except SpecError:
        return Outcome()
    wanted = compute_status(body, desired, observe(body, desired), now)
    out = Outcome(status=st.status_patch(current, wanted))
    if out.status.get("phase") and out.status["phase"] != current.get("phase"):
        out.events.append(
            ("Normal", "Phase", f"phase {current.get('phase') or '-'} -> {out.status['phase']}")
        )
    return out
