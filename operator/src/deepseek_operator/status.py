"""Pure status logic: observed facts in, conditions and phase out.

Nothing here talks to the API server or reads a clock; the caller passes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Condition:
    """One status condition as the caller wants it to be now."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def merge_conditions(
    existing: list[dict[str, Any]], wanted: list[Condition], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """Return the condition list with ``wanted`` applied over ``existing``.

    A condition keeps its ``lastTransitionTime`` while its status is unchanged, so
    that re-applying the same facts yields the same list (and no write). Conditions
    of other types are kept as they are.
    """
    by_type = {c.get("type"): dict(c) for c in existing}
    for cond in wanted:
        old = by_type.get(cond.type)
        transition = old.get("lastTransitionTime") if old and old.get("status") == cond.status else None
        entry: dict[str, Any] = {
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": transition or now,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        by_type[cond.type] = entry
    return sorted(by_type.values(), key=lambda c: str(c.get("type")))


def status_patch(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The top-level status fields of ``wanted`` that differ from ``current`` (empty: no write)."""
    return {k: v for k, v in wanted.items() if current.get(k) != v}


@dataclass(frozen=True)
class Observed:
    """What the cluster shows of one deployment's children."""

    deployment_found: bool = False
    desired_replicas: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    deployment_generation_observed: bool = True  # the Deployment controller saw our latest apply
    deployment_failed: str | None = None  # ProgressDeadlineExceeded message
    engine_needed: bool = False
    engine_succeeded: bool = False
    engine_failed: str | None = None  # why the build Job failed


def compute_phase_and_conditions(observed: Observed, plan_message: str) -> tuple[str, list[Condition]]:
    """Phase and the Placed / EngineReady / Progressing / Ready conditions from what was observed."""
    conds = [Condition("Placed", "True", "Planned", plan_message)]
    if observed.engine_needed:
        if observed.engine_failed:
            conds.append(Condition("EngineReady", "False", "BuildFailed", observed.engine_failed))
        elif observed.engine_succeeded:
            conds.append(Condition("EngineReady", "True", "Built", "the TensorRT engine is in the cache"))
        else:
            conds.append(Condition("EngineReady", "False", "Building", "the engine build Job is running"))
    else:
        conds.append(
            Condition("EngineReady", "True", "NotNeeded", "the PyTorch path loads the checkpoint directly")
        )

    rolled_out = (
        observed.deployment_found
        and observed.deployment_generation_observed
        and observed.updated_replicas >= observed.desired_replicas
        and observed.replicas == observed.updated_replicas
    )
    if observed.deployment_failed:
        conds.append(
            Condition("Progressing", "False", "ProgressDeadlineExceeded", observed.deployment_failed)
        )
    elif rolled_out:
        conds.append(
            Condition("Progressing", "False", "RolledOut", "every serving replica runs the current revision")
        )
    else:
        conds.append(Condition("Progressing", "True", "RollingOut", "serving replicas are being updated"))

    ready_msg = f"{observed.ready_replicas}/{observed.desired_replicas} serving replicas ready"
    if observed.engine_failed:
        phase = "Failed"
        conds.append(Condition("Ready", "False", "EngineBuildFailed", observed.engine_failed))
    elif observed.engine_needed and not observed.engine_succeeded:
        phase = "Building"
        conds.append(Condition("Ready", "False", "EngineBuilding", f"waiting for the engine; {ready_msg}"))
    elif observed.deployment_failed:
        phase = "Failed" if observed.ready_replicas == 0 else "Degraded"
        conds.append(Condition("Ready", "False", "ProgressDeadlineExceeded", observed.deployment_failed))
    elif (
        observed.desired_replicas > 0 and observed.ready_replicas >= observed.desired_replicas and rolled_out
    ):
        phase = "Ready"
        conds.append(Condition("Ready", "True", "Serving", ready_msg))
    elif observed.desired_replicas == 0 and observed.deployment_found:
        phase = "Ready"
        conds.append(Condition("Ready", "True", "ScaledToZero", "replicas is 0: nothing to serve"))
    elif observed.ready_replicas > 0:
        phase = "Deploying" if not rolled_out else "Degraded"
        conds.append(Condition("Ready", "True", "PartiallyServing", ready_msg))
    else:
        phase = "Deploying"
        conds.append(Condition("Ready", "False", "Starting", ready_msg))
    return phase, conds
