"""Pure status logic: observed facts in, conditions and phase out.

Nothing here talks to the API server or reads a clock; the caller passes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepseek_operator.api.types import ConditionStatus, ConditionType, Phase


@dataclass(frozen=True)
class Condition:
    """One status condition as the caller wants it to be now."""

    type: ConditionType
    status: ConditionStatus
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
            "type": str(cond.type),
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


def _engine_condition(observed: Observed) -> Condition:
    if not observed.engine_needed:
        return Condition(
            ConditionType.ENGINE_READY, "True", "NotNeeded", "the PyTorch path loads the checkpoint directly"
        )
    if observed.engine_failed:
        return Condition(ConditionType.ENGINE_READY, "False", "BuildFailed", observed.engine_failed)
    if observed.engine_succeeded:
        return Condition(ConditionType.ENGINE_READY, "True", "Built", "the TensorRT engine is in the cache")
    return Condition(ConditionType.ENGINE_READY, "False", "Building", "the engine build Job is running")


def _rolled_out(observed: Observed) -> bool:
    """Every serving replica runs the current revision, as the Deployment controller reports."""
    return (
        observed.deployment_found
        and observed.deployment_generation_observed
        and observed.updated_replicas >= observed.desired_replicas
        and observed.replicas == observed.updated_replicas
    )


def _progressing_condition(observed: Observed, rolled_out: bool) -> Condition:
    if observed.deployment_failed:
        return Condition(
            ConditionType.PROGRESSING, "False", "ProgressDeadlineExceeded", observed.deployment_failed
        )
    if rolled_out:
        return Condition(
            ConditionType.PROGRESSING, "False", "RolledOut", "every serving replica runs the current revision"
        )
    return Condition(ConditionType.PROGRESSING, "True", "RollingOut", "serving replicas are being updated")


def _phase_and_ready(observed: Observed, rolled_out: bool) -> tuple[Phase, Condition]:
    """The phase and the Ready condition: the first blocker (engine, deadline) wins."""
    ready_msg = f"{observed.ready_replicas}/{observed.desired_replicas} serving replicas ready"
    if observed.engine_failed:
        return Phase.FAILED, Condition(
            ConditionType.READY, "False", "EngineBuildFailed", observed.engine_failed
        )
    if observed.engine_needed and not observed.engine_succeeded:
        return Phase.BUILDING, Condition(
            ConditionType.READY, "False", "EngineBuilding", f"waiting for the engine; {ready_msg}"
        )
    if observed.deployment_failed:
        phase = Phase.FAILED if observed.ready_replicas == 0 else Phase.DEGRADED
        return phase, Condition(
            ConditionType.READY, "False", "ProgressDeadlineExceeded", observed.deployment_failed
        )
    if observed.desired_replicas > 0 and observed.ready_replicas >= observed.desired_replicas and rolled_out:
        return Phase.READY, Condition(ConditionType.READY, "True", "Serving", ready_msg)
    if observed.desired_replicas == 0 and observed.deployment_found:
        return Phase.READY, Condition(
            ConditionType.READY, "True", "ScaledToZero", "replicas is 0: nothing to serve"
        )
    if observed.ready_replicas > 0:
        phase = Phase.DEPLOYING if not rolled_out else Phase.DEGRADED
        return phase, Condition(ConditionType.READY, "True", "PartiallyServing", ready_msg)
    return Phase.DEPLOYING, Condition(ConditionType.READY, "False", "Starting", ready_msg)


def compute_phase_and_conditions(observed: Observed, plan_message: str) -> tuple[Phase, list[Condition]]:
    """Phase and the Placed / EngineReady / Progressing / Ready conditions from what was observed."""
    rolled_out = _rolled_out(observed)
    phase, ready = _phase_and_ready(observed, rolled_out)
    return phase, [
        Condition(ConditionType.PLACED, "True", "Planned", plan_message),
        _engine_condition(observed),
        _progressing_condition(observed, rolled_out),
        ready,
    ]
