"""Pure status logic."""

from __future__ import annotations

from deepseek_operator.api.types import ConditionType
from deepseek_operator.status import Condition, merge_conditions, status_patch


def test_new_condition_gets_now_and_generation() -> None:
    out = merge_conditions([], [Condition(ConditionType.READY, "False", "NotServing", "m")], 3, "T1")
    assert out == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "NotServing",
            "message": "m",
            "lastTransitionTime": "T1",
            "observedGeneration": 3,
        }
    ]


def test_same_status_keeps_transition_time() -> None:
    first = merge_conditions([], [Condition(ConditionType.READY, "False", "A", "m1")], 1, "T1")
    second = merge_conditions(first, [Condition(ConditionType.READY, "False", "B", "m2")], 2, "T2")
    assert second[0]["lastTransitionTime"] == "T1"
    assert second[0]["reason"] == "B"
    assert second[0]["observedGeneration"] == 2


def test_status_change_moves_transition_time() -> None:
    first = merge_conditions([], [Condition(ConditionType.READY, "False", "A", "m")], 1, "T1")
    second = merge_conditions(first, [Condition(ConditionType.READY, "True", "A", "m")], 1, "T2")
    assert second[0]["lastTransitionTime"] == "T2"


def test_other_conditions_are_kept_and_sorted() -> None:
    existing = [
        {"type": "Placed", "status": "True", "reason": "x", "message": "", "lastTransitionTime": "T0"}
    ]
    out = merge_conditions(existing, [Condition(ConditionType.READY, "True", "r", "m")], None, "T1")
    assert [c["type"] for c in out] == ["Placed", "Ready"]
    assert "observedGeneration" not in out[1]


def test_reapplying_same_facts_is_no_change() -> None:
    conds = merge_conditions([], [Condition(ConditionType.READY, "False", "A", "m")], 1, "T1")
    current = {"observedGeneration": 1, "phase": "Pending", "conditions": conds}
    again = merge_conditions(conds, [Condition(ConditionType.READY, "False", "A", "m")], 1, "T9")
    assert status_patch(current, {"observedGeneration": 1, "phase": "Pending", "conditions": again}) == {}


def test_status_patch_lists_only_differences() -> None:
    assert status_patch({"phase": "Pending", "replicas": 1}, {"phase": "Ready", "replicas": 1}) == {
        "phase": "Ready"
    }
