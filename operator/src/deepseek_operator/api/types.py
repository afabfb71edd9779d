"""The closed vocabularies of the API: phases, condition types, verdicts, roles, decision actions.

Each is a :class:`enum.StrEnum`, so a member equals (and serialises as) the string that the
status carries; code compares with members, never with bare strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Phase(StrEnum):
    """``status.phase`` of a DeepSeekDeployment."""

    PENDING = "Pending"
    PLACING = "Placing"
    BUILDING = "Building"
    DEPLOYING = "Deploying"
    CANARY = "Canary"
    READY = "Ready"
    DEGRADED = "Degraded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class ConditionType(StrEnum):
    """The condition types of the contract (``status.conditions[].type``)."""

    READY = "Ready"
    PLACED = "Placed"
    ENGINE_READY = "EngineReady"
    PROGRESSING = "Progressing"
    ANALYSIS_PASSING = "AnalysisPassing"
    ROLLED_BACK = "RolledBack"
    AUTOSCALING = "Autoscaling"  # only with spec.autoscaling: whether the HPA gets its metrics


ConditionStatus = Literal["True", "False", "Unknown"]


class Verdict(StrEnum):
    """The verdict of one analysis (``status.analysis.history[].verdict``)."""

    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class Role(StrEnum):
    """What a revision's workload is for."""

    STABLE = "stable"  # serves traffic
    CANARY = "canary"  # analysed beside stable, taking its share of traffic
    STANDBY = "standby"  # the previous good revision, kept warm without traffic


class CanaryMode(StrEnum):
    """How a canary gets its GPUs (``status.revisions.canaryMode``)."""

    ADD_REPLICAS = "AddReplicas"
    REPLACE_REPLICA = "ReplaceReplica"


class DecisionAction(StrEnum):
    """What the latest analysis means for the rollout (``Decision.action``)."""

    NONE = "none"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    FAIL = "fail"
    VERIFY = "verify"
    HALT = "halt"
