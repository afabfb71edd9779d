"""A revision's objects and the objects revisions share, built by one pure function each: the same
functions serve the apply path and the golden files.

Every built object carries the hash of itself in :data:`APPLIED_HASH_ANNOTATION`, so that the
loop compares hashes with the watch cache and writes nothing when nothing changed (as
prometheus-operator does).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.constants import GROUP, LWS_API_VERSION, LWS_KIND
from deepseek_operator.api.spec import DeploymentSpec
from deepseek_operator.builders import model_repository as repo
from deepseek_operator.builders import multinode, serving
from deepseek_operator.errors import OperatorError
from deepseek_operator.images import profile_for
from deepseek_operator.planning import catalog
from deepseek_operator.planning.placement import Refusal, plan_placement
from deepseek_operator.planning.types import NodeInfo, Plan
from deepseek_operator.rollout import revisions as rec

APPLIED_HASH_ANNOTATION = f"{GROUP}/applied-hash"
# The hash of a Deployment's pod template, on the Deployment (annotation) and on its pods (label):
# when every pod of a revision carries the hash its Deployment has now, that revision is rolled
# out, known as soon as the pods say so (the Deployment controller's status follows a few writes
# later).
TEMPLATE_HASH = f"{GROUP}/template-hash"
Records = Mapping[str, Mapping[str, Any]]  # revision -> its ControllerRevision


def workload_kind(plan: Plan) -> tuple[str, str]:
    """(apiVersion, kind) of a revision's serving workload."""
    if plan.nodes_per_replica > 1:
        return LWS_API_VERSION, LWS_KIND
    return "apps/v1", "Deployment"


def plan_for(body: Mapping[str, Any], spec: DeploymentSpec, nodes: list[NodeInfo]) -> Plan | Refusal:
    """Place ``spec`` on ``nodes``, keeping the GPU product the resource runs on while it fits."""
    arch = catalog.arch_from_spec(spec.model)
    previous = ((body.get("status") or {}).get("placement") or {}).get("gpuProduct") or None
    return plan_placement(spec, arch, nodes, previous)


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the hash of its content in :data:`APPLIED_HASH_ANNOTATION` (and a Deployment's
    pod template with its own hash in :data:`TEMPLATE_HASH`)."""
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    if out.get("kind") == "Deployment" and isinstance((out.get("spec") or {}).get("template"), dict):
        template = out["spec"]["template"]
        template_meta = template.setdefault("metadata", {})
        labels = {k: v for k, v in (template_meta.get("labels") or {}).items() if k != TEMPLATE_HASH}
        digest = names.stable_hash({**template, "metadata": {**template_meta, "labels": labels}}, 10)
        template_meta["labels"] = {**labels, TEMPLATE_HASH: digest}
        meta["annotations"] = {**(meta.get("annotations") or {}), TEMPLATE_HASH: digest}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH_ANNOTATION}
    digest = names.stable_hash({**out, "metadata": {**meta, "annotations": annotations}}, 16)
    meta["annotations"] = {**annotations, APPLIED_HASH_ANNOTATION: digest}
    return out


def applied_hash(obj: Mapping[str, Any] | None) -> str:
    """The hash an object was applied with ("" when absent)."""
    return str(
        (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION, "")
    )


def build_revision(
    owner: Mapping[str, Any], spec: DeploymentSpec, plan: Plan, revision: str
) -> list[dict[str, Any]]:
    """One revision's objects: its model repository, engine build Job and workload, stamped (replica
    counts left out: they are set through the scale field manager). Raises SpecError when the
    spec cannot be laid out."""
    body = dict(owner)
    lay = serving.layout(spec, plan)
    if plan.nodes_per_replica > 1:
        return [stamp(multinode.build_leader_worker_set(body, spec, plan, None))]
    paths = repo.RepositoryPaths(
        engine_dir=lay.engine_dir, tokenizer_dir=lay.checkpoint_dir, model_dir=lay.checkpoint_dir
    )
    objects = [
        serving.build_model_repository_configmap(
            body, repo.build_model_repository(spec, plan, paths), revision
        )
    ]
    if plan.runtime == "tensorrt-llm":
        objects.append(serving.build_engine_job(body, spec, plan))
    objects.append(
        serving.build_deployment(
            body, spec, plan, repo.repository_sources(plan.runtime, spec.engine.image), None
        )
    )
    return [stamp(o) for o in objects]


def build_shared(
    owner: Mapping[str, Any], spec: DeploymentSpec, stable: str, stable_plan: Plan, lent: int = 0
) -> list[dict[str, Any]]:
    """The objects revisions share, stamped: the Service (pods labelled for traffic), the PDB (the
    stable revision's pods) and the HPA on the stable workload."""
    body = dict(owner)
    multi = stable_plan.nodes_per_replica > 1
    objects = [serving.build_service(body, spec, leader_only=multi), serving.build_pdb(body, stable)]
    target = names.workload_name(body["metadata"]["name"], stable)
    if hpa := serving.build_hpa(body, spec, target, workload_kind(stable_plan)[1], lent):
        objects.append(hpa)
    return [stamp(o) for o in objects]


def build_record(
    owner: Mapping[str, Any], revision: str, records: Records, raw_spec: Mapping[str, Any], plan: Plan
) -> dict[str, Any]:
    """The ControllerRevision recording a new revision, numbered after the newest record."""
    number = rec.next_number([dict(r) for r in records.values()])
    return rec.build_controller_revision(dict(owner), revision, number, dict(raw_spec), plan)


def load_revision(body: Mapping[str, Any], revision: str, records: Records) -> tuple[DeploymentSpec, Plan]:
    """The spec and plan to build ``revision`` with, from its record."""
    record = records.get(revision)
    if record is None:
        raise OperatorError(
            f"revision {revision} has no ControllerRevision record; it cannot be rebuilt (was it deleted?)"
        )
    return rec.spec_for_revision(dict(record), dict(body.get("spec") or {})), rec.plan_for_revision(
        dict(record)
    )


def spec_revision(body: Mapping[str, Any], records: Records) -> str:
    """The revision the spec names: the newest record whose pod sections equal the spec's."""
    spec = body.get("spec") or {}
    wanted = {k: spec[k] for k in rec.POD_SECTIONS if k in spec}
    best, number = "", -1
    for revision, record in records.items():
        n = int(record.get("revision") or 0)
        if ((record.get("data") or {}).get("spec") or {}) == wanted and n > number:
            best, number = revision, n
    return best


def records_of(children: Mapping[tuple[str, str], Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The ControllerRevisions among ``children``, by the revision they record."""
    out: dict[str, Mapping[str, Any]] = {}
    for (kind, name), obj in children.items():
        if kind != rec.KIND:
            continue
        labels = (obj.get("metadata") or {}).get("labels") or {}
        revision, owner = labels.get(names.REVISION_LABEL), labels.get(names.DEPLOYMENT_LABEL)
        # Only the operator's own records: the StatefulSets a LeaderWorkerSet controller makes keep
        # ControllerRevisions of their own, named <statefulset>-<hash>, with the pod template's labels
        # (ours included). Seen with the real LWS controller (v0.9.0) in the simulated cluster.
        if revision and owner and name == names.controller_revision_name(str(owner), str(revision)):
            out[str(revision)] = obj
    return out


def plan_message(plan: Plan, image: str = "") -> str:
    """The Placed condition's message for a plan; for an ``image`` without its own profile it says
    which profile was used and that it was not verified against that tag."""
    gpu = plan.gpu_product or "any GPU"
    parallel = f"TP {plan.tensor_parallel}, PP {plan.pipeline_parallel}"
    note = profile_for(image).note if image else ""
    return (
        f"{plan.gpus_per_replica} x {gpu} per replica ({parallel}), "
        f"{plan.precision}, {plan.runtime} runtime, ~{plan.estimated_gpu_memory_gib} GiB per GPU, "
        f"max batch {plan.max_batch_size}" + (f"; {note}" if note else "")
    )


def placement_status(plan: Plan) -> dict[str, Any]:
    """``status.placement`` for a plan."""
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


def endpoints_status(body: Mapping[str, Any]) -> dict[str, str]:
    """``status.endpoints``: the Service's in-cluster addresses."""
    meta = body["metadata"]
    host = f"{names.serving_name(meta['name'])}.{meta['namespace']}.svc"
    return {"http": f"http://{host}:{serving.HTTP_PORT}", "grpc": f"{host}:{serving.GRPC_PORT}"}
