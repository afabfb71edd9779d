"""``deepseek-operator render -f resource.yaml [--gpus h100:2x8]``: what the operator would create, offline.

Like ``helm template``: for each DeepSeekDeployment in the file, the plan placement makes on the
given GPU pools (or on an idealised empty cluster of every catalog GPU), then every object of a
first deployment, built by the same functions the operator applies, as a YAML stream. The model
repository the serving pods assemble follows as YAML comments (so the stream stays valid YAML for
``kubectl apply --dry-run``): the files the operator renders, and the folders the init container
copies from the image. Nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import yaml

from deepseek_operator.api.constants import KIND
from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.builders import model_repository as repo
from deepseek_operator.builders import serving
from deepseek_operator.errors import SpecError
from deepseek_operator.images import profile_for
from deepseek_operator.planning.inventory import build_inventory
from deepseek_operator.planning.placement import Refusal, catalog_nodes
from deepseek_operator.planning.types import NodeInfo, Plan
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.sim.gpus import node_manifests, parse_gpu_spec

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"  # the API server assigns the real one


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (Triton configs, scripts) as literal blocks, readable as they will run."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def nodes_for(gpus: str | None) -> list[NodeInfo]:
    """The GPU inventory to plan on: empty Ready nodes of ``gpus`` (``POOL:NODESxGPUS[,...]``, as
    ``sim up --gpus``), or every catalog GPU when None."""
    if gpus is None:
        return catalog_nodes()
    manifests = node_manifests(parse_gpu_spec(gpus))
    for node in manifests:
        node.setdefault("status", {})["conditions"] = [{"type": "Ready", "status": "True"}]
    return build_inventory(manifests, [])


def resources_in(text: str, source: str) -> list[dict[str, Any]]:
    """The DeepSeekDeployments of a YAML stream; :class:`SpecError` naming the file when none."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as e:
        raise SpecError(f"{source}: not valid YAML: {e}") from e
    found = [d for d in docs if d.get("kind") == KIND]
    if not found:
        raise SpecError(f"{source}: no {KIND} in it (kind: {KIND}, apiVersion serving.deepseek.ai/v1alpha1)")
    return found


def _owner(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    body = copy.deepcopy(doc)
    meta = body.setdefault("metadata", {})
    if not meta.get("name"):
        raise SpecError("metadata.name: required; name the DeepSeekDeployment")
    meta.setdefault("namespace", namespace)
    meta.setdefault("uid", PLACEHOLDER_UID)
    meta.setdefault("generation", 1)
    return body


def _plan(body: dict[str, Any], spec: DeploymentSpec, nodes: list[NodeInfo]) -> Plan:
    plan = rv.plan_for(body, spec, nodes)
    if isinstance(plan, Refusal):
        raise SpecError(f"{body['metadata']['name']}: not placed ({plan.reason}): {plan.message}")
    return plan


def _comment(lines: Iterable[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def _repository_comment(spec: DeploymentSpec, plan: Plan) -> str:
    if plan.nodes_per_replica > 1:
        return _comment(
            [
                "model repository: none. A multi-node replica serves with trtllm-serve (OpenAI-style API",
                "on http 8000) over the LeaderWorkerSet's pods; nothing is copied from the image.",
            ]
        )
    lay = serving.layout(spec, plan)
    paths = repo.RepositoryPaths(
        engine_dir=lay.engine_dir, tokenizer_dir=lay.checkpoint_dir, model_dir=lay.checkpoint_dir
    )
    files = repo.build_model_repository(spec, plan, paths)
    source = repo.repository_sources(plan.runtime, spec.engine.image)
    models = repo.repository_models(plan.runtime, spec.engine.image)
    lines = [
        f"model repository ({serving.REPO_MOUNT} in the serving pod), {plan.runtime} runtime:",
        f"copied from the image: {', '.join(f'{source}/{m}' for m in models)} (their 1/ folders)",
        "then these files, rendered by the operator, written over them:",
    ]
    for path, text in sorted(files.items()):
        lines += ["", f"--- {path}", *text.splitlines()]
    return _comment(lines)


def render(text: str, source: str, gpus: str | None = None, namespace: str = "default") -> str:
    """Every object the operator would create for each DeepSeekDeployment in ``text`` (a YAML
    stream), then the model repository as comments. Raises :class:`SpecError` (naming the field and
    the fix) for a bad spec or one that cannot be placed on ``gpus``."""
    nodes = nodes_for(gpus)
    out: list[str] = []
    for doc in resources_in(text, source):
        body = _owner(doc, namespace)
        name = body["metadata"]["name"]
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as e:
            raise SpecError(f"{name}: {e}") from e
        plan = _plan(body, spec, nodes)
        revision = serving.revision_hash(spec, plan)
        match = profile_for(spec.engine.image)
        header = [
            f"{body['metadata']['namespace']}/{name}: revision {revision}; {rv.plan_message(plan)}",
            f"image profile: {match.profile.release} ({match.profile.label})"
            + ("" if match.verified else f"; {match.note}"),
            f"replicas: {spec.replicas} (the operator sets them through the scale subresource)",
        ]
        objects = [
            rv.build_record(body, revision, {}, body.get("spec") or {}, plan),
            *rv.build_revision(body, spec, plan, revision),
            *rv.build_shared(body, spec, revision, plan),
        ]
        out.append(_comment(header) + yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=120))
        out.append(_repository_comment(spec, plan))
    return "---\n".join(out)
