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
