"""Object names, labels and owner references: the one place they are made."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from deepseek_operator.api import constants as c

REVISION_LABEL = f"{c.GROUP}/revision"
DEPLOYMENT_LABEL = f"{c.GROUP}/deployment"
ENGINE_CACHE_KEY_ANNOTATION = f"{c.GROUP}/engine-cache-key"
# On the pods of the revisions that take traffic (stable and canary); the Service selects it.
# Serving pod templates carry it, so a pod takes traffic once it is ready with no label write (a
# pass less on the way to Ready, and no write per pod). The operator removes it from the pods of a
# warm standby revision (and sets it again on a rollback to them), so moving traffic is a label
# change, not a pod start. A standby pod its controller recreates starts with it and loses it on
# the operator's next pass, long before it is ready (see docs/loop.md).
TRAFFIC_LABEL = f"{c.GROUP}/traffic"
TRAFFIC_ON = "serving"
ROLE_ANNOTATION = f"{c.GROUP}/role"
RETRY_ANNOTATION = f"{c.GROUP}/retry"

COMPONENT_SERVING = "serving"
COMPONENT_ENGINE_BUILD = "engine-build"
COMPONENT_MODEL_REPOSITORY = "model-repository"


def stable_hash(obj: Any, length: int = 10) -> str:
    """A short hex digest of a JSON-able value, stable across runs and key orders."""
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:length]


def _dns_name(*parts: str, limit: int = 63) -> str:
    name = "-".join(p for p in parts if p).lower()
    if len(name) <= limit:
        return name
    # Too long: keep a readable prefix and a hash of the whole for uniqueness.
    return f"{name[: limit - 11].rstrip('-')}-{stable_hash(name, 10)}"


def serving_name(owner: str) -> str:
    """Name of the serving Deployment, its Service and its PodDisruptionBudget."""
    return _dns_name(owner)


def workload_name(owner: str, revision: str) -> str:
    """Name of the serving workload (Deployment or LeaderWorkerSet) of one revision."""
    return _dns_name(owner, revision)


def model_repository_name(owner: str, revision: str) -> str:
    """Name of the ConfigMap holding one revision's Triton model repository."""
    return _dns_name(owner, "triton-repo", revision, limit=253)


def controller_revision_name(owner: str, revision: str) -> str:
    """Name of the ControllerRevision that records one revision for restoring it later."""
    return _dns_name(owner, revision, limit=253)


def engine_job_name(owner: str, cache_key: str) -> str:
    """Name of the engine build Job for one engine cache entry."""
    return _dns_name(owner, "engine", cache_key[:10])


def labels(owner: str, component: str) -> dict[str, str]:
    """The labels every child of ``owner`` carries."""
    return {
        c.LABEL_NAME: "deepseek-serving",
        c.LABEL_INSTANCE: owner,
        c.LABEL_COMPONENT: component,
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: "deepseek-operator",
        DEPLOYMENT_LABEL: owner,
    }


def selector(owner: str, component: str) -> dict[str, str]:
    """The labels that select ``owner``'s pods of ``component`` (immutable once used)."""
    return {c.LABEL_INSTANCE: owner, c.LABEL_COMPONENT: component, DEPLOYMENT_LABEL: owner}


def revision_selector(owner: str, revision: str) -> dict[str, str]:
    """The labels that select the serving pods of one revision of ``owner``."""
    return {**selector(owner, COMPONENT_SERVING), REVISION_LABEL: revision}


def serving_pod_labels(owner: str, revision: str) -> dict[str, str]:
    """The labels of ``revision``'s serving pods as their workload creates them."""
    return {**labels(owner, COMPONENT_SERVING), REVISION_LABEL: revision, TRAFFIC_LABEL: TRAFFIC_ON}


def owned_selector(owner: str) -> dict[str, str]:
    """The label that selects every child of ``owner``, whatever its component."""
    return {DEPLOYMENT_LABEL: owner}


def managed_selector() -> dict[str, str]:
    """The label that selects everything the operator manages, in every namespace."""
    return {c.LABEL_MANAGED_BY: c.MANAGED_BY}


def label_selector(match: Mapping[str, str]) -> str:
    """``match`` as the ``labelSelector`` query of a list or watch: ``k1=v1,k2=v2`` (equality only)."""
    return ",".join(f"{key}={value}" for key, value in match.items())


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller owner reference to the DeepSeekDeployment ``owner`` (its body)."""
    meta = owner["metadata"]
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(owner: dict[str, Any], name: str, component: str) -> dict[str, Any]:
    """Metadata for a child object: name, namespace, labels and the owner reference."""
    return {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": labels(owner["metadata"]["name"], component),
        "ownerReferences": [owner_reference(owner)],
    }
