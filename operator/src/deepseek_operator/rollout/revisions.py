"""Revision history: one ControllerRevision per rollout revision, so that any recent revision can
be rebuilt exactly (after a rollback the spec still names the bad revision; the good one is
rebuilt from its record, also after an operator restart).

The record holds the whole spec as it was (its pod-shaping sections are what the revision
is) and the plan placement made for it; rebuilding combines the recorded pod-shaping sections
with the current spec's other fields (replicas, service, rollout settings).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from deepseek_operator.api import names
from deepseek_operator.api.spec import DeploymentSpec, parse_spec
from deepseek_operator.errors import OperatorError
from deepseek_operator.planning.types import Plan

API_VERSION, KIND = "apps/v1", "ControllerRevision"
POD_SECTIONS = ("model", "engine", "gpu", "nccl")  # the spec sections that make a revision
HISTORY_LIMIT = 10  # records kept besides those of live revisions


def plan_to_record(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-able data."""
    return asdict(plan)


def plan_from_record(raw: dict[str, Any]) -> Plan:
    """The plan back from :func:`plan_to_record` data (unknown keys from a newer operator ignored)."""
    fields = set(Plan.__dataclass_fields__)
    data = {k: v for k, v in raw.items() if k in fields}
    for key in ("nccl_env", "extra_resources", "memory_breakdown"):
        data[key] = tuple(tuple(kv) for kv in data.get(key) or ())
    data["gpu_products"] = tuple(data.get("gpu_products") or ())
    return Plan(**data)


def build_controller_revision(
    owner: dict[str, Any], revision: str, number: int, raw_spec: dict[str, Any], plan: Plan
) -> dict[str, Any]:
    """The ControllerRevision recording ``revision`` (``number`` orders the history)."""
    meta = names.child_metadata(
        owner, names.controller_revision_name(owner["metadata"]["name"], revision), names.COMPONENT_SERVING
    )
    meta["labels"][names.REVISION_LABEL] = revision
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": meta,
        "revision": number,
        "data": {
            "revision": revision,
            "spec": {k: raw_spec[k] for k in POD_SECTIONS if k in raw_spec},
            "plan": plan_to_record(plan),
        },
    }


def spec_for_revision(record: dict[str, Any], current_raw_spec: dict[str, Any]) -> DeploymentSpec:
    """The spec to build a recorded revision with: its pod-shaping sections, the current rest."""
    data = record.get("data") or {}
    merged = {k: v for k, v in current_raw_spec.items() if k not in POD_SECTIONS}
    merged.update(data.get("spec") or {})
    return parse_spec(merged)


def plan_for_revision(record: dict[str, Any]) -> Plan:
    """The plan recorded for a revision."""
    data = record.get("data") or {}
    if not isinstance(data.get("plan"), dict):
        raise OperatorError(f"ControllerRevision {record['metadata']['name']} has no plan")
    return plan_from_record(data["plan"])


def next_number(records: list[dict[str, Any]]) -> int:
    """The number for a new record: one more than the highest."""
    return 1 + max((int(r.get("revision") or 0) for r in records), default=0)


def prunable(records: list[dict[str, Any]], live: set[str]) -> list[dict[str, Any]]:
    """Records to delete: the oldest beyond :data:`HISTORY_LIMIT`, never those of ``live`` revisions."""

    def revision_of(r: dict[str, Any]) -> str:
        return str(((r.get("metadata") or {}).get("labels") or {}).get(names.REVISION_LABEL) or "")

    old = [r for r in records if revision_of(r) not in live]
    old.sort(key=lambda r: int(r.get("revision") or 0))
    return old[: max(len(old) - HISTORY_LIMIT, 0)]
