"""What one pass of the loop knows and what it will do: :class:`Facts` in, :class:`Writes` out.

Both are plain data. Gathering fills Facts from the watch caches (plus, when one is due, an
analysis of the revision under test); :func:`deepseek_operator.reconcile.decide.decide` turns
them into Writes; writing carries those out in order. No clock is read here: ``Facts.now`` is
the only time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deepseek_operator.api.types import Role
from deepseek_operator.planning.types import NodeInfo
from deepseek_operator.reconcile.capacity import Claim
from deepseek_operator.rollout.decisions import Measurement
from deepseek_operator.rollout.figures import Counters

Event = tuple[str, str, str]  # (Normal | Warning, reason, message)
ChildKey = tuple[str, str]  # (kind, name)


@dataclass(frozen=True)
class AnalysisRun:
    """An analysis gathering ran because one was due: of whom, and the figures."""

    subject: str  # the revision analysed
    role: Role  # canary | stable
    measurement: Measurement
    counters: Counters | None  # Triton's counters to keep for the next analysis
    golden_problem: str = ""  # the golden set could not be loaded (a condition, never a rollback)


@dataclass(frozen=True)
class Facts:
    """Everything one decision is made from."""

    body: Mapping[str, Any]  # the DeepSeekDeployment as last seen
    now: dt.datetime
    children: Mapping[ChildKey, Mapping[str, Any]] = field(default_factory=dict)  # owned objects, pods too
    # The GPU nodes with the GPUs taken on them by everyone else (bound pods and the claims of
    # resources placed a moment ago; this resource's own pods left out). Gathered only when
    # placement runs.
    inventory: Sequence[NodeInfo] = ()
    references: Mapping[tuple[str, str], bool] = field(default_factory=dict)  # (kind, name) -> exists
    analysis: AnalysisRun | None = None
    analysis_ran_at: dt.datetime | None = None  # an analysis ran then whose result was not written
    # The custom metrics APIService (v1beta1.custom.metrics.k8s.io) as watched: {} when there is
    # none, None when not known (not watched in a namespace-scoped install, not listed yet).
    metrics_api: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Scale:
    """A replica count to set under the scale field manager."""

    api_version: str
    kind: str
    name: str
    replicas: int


@dataclass(frozen=True)
class Delete:
    """An object to delete."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Relabel:
    """Labels to set on a pod (None removes one)."""

    pod: str
    labels: Mapping[str, str | None]


@dataclass(frozen=True)
class MetricOp:
    """A metric to move: ``inc`` a counter or ``observe`` a histogram."""

    name: str  # analyses | rollbacks | promotions | drift_to_rollback | placement_refusals (metrics.py)
    labels: tuple[str, ...]
    value: float = 1.0


@dataclass
class Writes:
    """What one pass does, carried out in this order: records, events, status (conditional on the
    resourceVersion decided on; a conflict ends the pass), objects, scales, deletions, pod labels,
    metrics. Without ``status_first`` the objects and scales go before the events and status."""

    records: list[dict[str, Any]] = field(default_factory=list)  # ControllerRevisions to create
    events: list[Event] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # top-level status fields to merge
    apply: list[dict[str, Any]] = field(default_factory=list)
    scale: list[Scale] = field(default_factory=list)
    delete: list[Delete] = field(default_factory=list)
    relabel: list[Relabel] = field(default_factory=list)
    metrics: list[MetricOp] = field(default_factory=list)
    requeue_after: float | None = None  # come back then even if nothing changes (time-driven work)
    analysis_ran_at: dt.datetime | None = None  # remember: an analysis ran whose result is not written
    waiting_for_capacity: bool = False  # wake this resource when GPUs free up
    claim: Claim | None = None  # GPUs a new placement asked for, taken until its pods are bound
    # The status goes before the objects when it moves revisions that already run (the decision
    # must be durable before workloads move); a first deployment's objects may go first.
    status_first: bool = True

    def only_progress(self) -> bool:
        """Whether the pass only reports progress (status fields that follow the children, no
        decision, no event): such a write can give way to a newer pass."""
        decided = {"revisions", "analysis", "lastRollback", "observedGeneration"}
        return (
            bool(self.status)
            and not decided & set(self.status)
            and not (
                self.records
                or self.events
                or self.apply
                or self.scale
                or self.delete
                or self.relabel
                or self.metrics
            )
        )

    def empty(self) -> bool:
        """Whether the pass writes nothing to the API server."""
        return not (
            self.records
            or self.events
            or self.status
            or self.apply
            or self.scale
            or self.delete
            or self.relabel
        )
