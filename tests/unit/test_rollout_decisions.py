"""Rollout decisions as tables: spec changes, verdicts, promotion, rollback, failure, workloads."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from deepseek_operator.api.types import CanaryMode, DecisionAction, Role, Verdict
from deepseek_operator.rollout import decisions as d
from deepseek_operator.rollout.decisions import Measurement, Revisions, Thresholds

T = Thresholds(
    max_p99_latency_ms=500,
    max_error_rate=0.05,
    min_score=0.9,
    max_drop=0.05,
    successful_analyses=3,
    failure_limit=3,
)


def _hist(revision: str, role: Role, epoch: int, verdicts: str) -> list[dict[str, Any]]:
    """History from a string of P/F/I (oldest first)."""
    names = {"P": Verdict.PASS, "F": Verdict.FAIL, "I": Verdict.INCONCLUSIVE}
    reasons = {"F": ["p99 latency 812 ms > 500 ms"]}
    return [
        {
            "revision": revision,
            "role": role,
            "epoch": epoch,
            "verdict": names[v],
            "reasons": reasons.get(v, []),
            "accuracy": 0.95,
        }
        for v in verdicts
    ]


# --- plan_step --------------------------------------------------------------------------------


def test_first_deployment_becomes_stable_at_once() -> None:
    step = d.plan_step(Revisions(), "a")
    assert step.revisions.stable == "a" and step.revisions.canary == "" and not step.new_canary
    assert step.revisions.epoch == 1


def test_a_new_revision_becomes_the_canary() -> None:
    step = d.plan_step(Revisions(stable="a", verified=True, epoch=4), "b")
    assert (step.revisions.stable, step.revisions.canary, step.new_canary) == ("a", "b", True)
    assert step.revisions.epoch == 5


def test_same_revision_changes_nothing() -> None:
    revs = Revisions(stable="a", canary="b", epoch=2)
    assert d.plan_step(revs, "b").revisions == revs
    assert d.plan_step(Revisions(stable="a", epoch=2), "a").revisions == Revisions(stable="a", epoch=2)


def test_back_to_stable_aborts_the_canary() -> None:
    step = d.plan_step(Revisions(stable="a", canary="b", lent=1, epoch=2), "a")
    assert (step.revisions.canary, step.revisions.lent) == ("", 0)
    assert [e[1] for e in step.events] == ["CanaryAborted"]


def test_another_revision_replaces_the_canary() -> None:
    step = d.plan_step(Revisions(stable="a", canary="b", epoch=2), "c")
    assert step.revisions.canary == "c" and step.new_canary
    assert "CanaryAborted" in [e[1] for e in step.events]


def test_failed_revision_is_not_retried_until_the_annotation_is_new() -> None:
    revs = Revisions(stable="a", failed=("b",), retry="x", epoch=3)
    blocked = d.plan_step(revs, "b", retry="x")
    assert blocked.blocked and "serving.deepseek.ai/retry" in blocked.blocked
    assert blocked.revisions.canary == ""
    retried = d.plan_step(revs, "b", retry="y")
    assert not retried.blocked and retried.revisions.canary == "b" and retried.revisions.failed == ()
    assert retried.revisions.retry == "y"
    # The annotation value is remembered: once b fails again, the same value does not retry it.
    again = d.plan_step(Revisions(stable="a", failed=("b",), retry="y"), "b", retry="y")
    assert again.blocked


def test_a_broken_stable_with_nothing_to_fall_back_on_is_replaced_directly() -> None:
    step = d.plan_step(Revisions(stable="a", failed=("a",), epoch=3), "b")
    assert (step.revisions.stable, step.revisions.canary, step.revisions.verified) == ("b", "", False)


# --- evaluate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "verdict", "needle"),
    [
        (Measurement(p99_latency_ms=200, error_rate=0.0, requests=5), Verdict.PASS, ""),
        (
            Measurement(p99_latency_ms=812, error_rate=0.0, requests=5),
            Verdict.FAIL,
            "p99 latency 812 ms > 500 ms",
        ),
        (
            Measurement(p99_latency_ms=100, error_rate=0.5, requests=4),
            Verdict.FAIL,
            "error rate 0.500 > 0.05",
        ),
        (Measurement(p99_latency_ms=100, error_rate=0, accuracy=0.5), Verdict.FAIL, "< minScore 0.9"),
        (
            Measurement(p99_latency_ms=100, error_rate=0, accuracy=0.91, baseline_accuracy=1.0),
            Verdict.FAIL,
            "dropped 0.090",
        ),
        (
            Measurement(p99_latency_ms=100, error_rate=0, accuracy=0.96, baseline_accuracy=1.0),
            Verdict.PASS,
            "",
        ),
        (Measurement(problems=("revision b has no ready pods",)), Verdict.INCONCLUSIVE, "no ready pods"),
        (Measurement(p99_latency_ms=100), Verdict.INCONCLUSIVE, "no requests"),
        # A failing figure fails even while another figure is missing.
        (Measurement(p99_latency_ms=900, problems=("golden set invalid",)), Verdict.FAIL, "p99"),
    ],
)
def test_evaluate(m: Measurement, verdict: str, needle: str) -> None:
    got, reasons = d.evaluate(m, T)
    assert got == verdict
    assert needle in " ".join(reasons)


def test_a_golden_set_makes_accuracy_required() -> None:
    m = Measurement(p99_latency_ms=100, error_rate=0.0, requests=3)
    assert d.evaluate(m, T)[0] == Verdict.PASS
    with_golden = Thresholds(golden_set=True)
    assert d.evaluate(m, with_golden) == (Verdict.INCONCLUSIVE, ("no golden-set score",))


def test_exactly_max_drop_passes() -> None:
    m = Measurement(p99_latency_ms=1, error_rate=0, accuracy=0.95, baseline_accuracy=1.0)
    assert d.evaluate(m, T)[0] == Verdict.PASS


# --- streaks and decide_rollout -------------------------------------------------------------------


def test_streak_skips_inconclusive_and_other_epochs() -> None:
    hist = _hist("b", Role.CANARY, 1, "FFF") + _hist("b", Role.CANARY, 2, "PIPF")
    assert d.streak(hist, "b", Role.CANARY, 2) == (Verdict.FAIL, 1)
    assert d.streak(hist, "b", Role.CANARY, 1) == (Verdict.FAIL, 3)
    assert d.streak(_hist("b", Role.CANARY, 2, "FPIP"), "b", Role.CANARY, 2) == (Verdict.PASS, 2)
    assert d.streak([], "b", Role.CANARY, 2) == (None, 0)


CANARY = Revisions(stable="a", canary="b", previous="z", epoch=7, verified=True, baseline_accuracy=0.97)


@pytest.mark.parametrize(
    ("verdicts", "action"),
    [
        ("PP", DecisionAction.NONE),
        ("PPP", DecisionAction.PROMOTE),
        ("FPPP", DecisionAction.PROMOTE),
        ("FF", DecisionAction.NONE),
        ("FFF", DecisionAction.ROLLBACK),
        ("FIFIF", DecisionAction.ROLLBACK),
        ("FFPFF", DecisionAction.NONE),
        ("IIIIII", DecisionAction.NONE),
    ],
)
def test_canary_decisions(verdicts: str, action: DecisionAction) -> None:
    decision = d.decide_rollout(CANARY, _hist("b", Role.CANARY, 7, verdicts), T)
    assert decision.action == action


def test_promotion_moves_canary_to_stable_and_keeps_the_old_stable_as_previous() -> None:
    decision = d.decide_rollout(CANARY, _hist("b", Role.CANARY, 7, "PPP"), T)
    new = decision.revisions
    assert (new.stable, new.canary, new.previous, new.verified) == ("b", "", "a", True)
    assert new.baseline_accuracy == 0.95 and new.epoch == 8


def test_canary_rollback_marks_it_failed_and_keeps_stable() -> None:
    decision = d.decide_rollout(CANARY, _hist("b", Role.CANARY, 7, "FFF"), T)
    new = decision.revisions
    assert (new.stable, new.canary, new.failed, new.previous) == ("a", "", ("b",), "z")
    assert (decision.rolled_back_from, decision.rolled_back_to) == ("b", "a")
    assert decision.reason == "p99 latency 812 ms > 500 ms in 3 consecutive analyses"


def test_without_auto_rollback_a_failing_canary_halts_once() -> None:
    manual = Thresholds(failure_limit=3, auto_rollback=False)
    assert d.decide_rollout(CANARY, _hist("b", Role.CANARY, 7, "FFF"), manual).action == DecisionAction.HALT
    assert d.decide_rollout(CANARY, _hist("b", Role.CANARY, 7, "FFFF"), manual).action == DecisionAction.NONE


def test_a_drifting_stable_rolls_back_to_previous() -> None:
    revs = Revisions(stable="b", previous="a", verified=True, epoch=9)
    decision = d.decide_rollout(revs, _hist("b", Role.STABLE, 9, "PPPFFF"), T)
    assert decision.action == DecisionAction.ROLLBACK
    new = decision.revisions
    assert (new.stable, new.previous, new.failed) == ("a", "", ("b",))


def test_a_first_deployment_that_fails_is_failed_with_nothing_to_roll_back_to() -> None:
    revs = Revisions(stable="a", epoch=1)
    decision = d.decide_rollout(revs, _hist("a", Role.STABLE, 1, "FFF"), T)
    assert decision.action == DecisionAction.FAIL
    assert "no earlier revision" in decision.reason
    assert decision.revisions.failed == ("a",)
    # Once failed, nothing more is decided for it.
    assert (
        d.decide_rollout(decision.revisions, _hist("a", Role.STABLE, 2, "FFFF"), T).action
        == DecisionAction.NONE
    )


def test_a_first_deployment_is_verified_after_the_passes() -> None:
    decision = d.decide_rollout(Revisions(stable="a", epoch=1), _hist("a", Role.STABLE, 1, "PPP"), T)
    assert decision.action == DecisionAction.VERIFY and decision.revisions.verified
    assert decision.revisions.baseline_accuracy == 0.95
    # A verified stable that drifts with no previous revision halts (stays serving, says so).
    halted = d.decide_rollout(decision.revisions, _hist("a", Role.STABLE, 1, "PPPFFF"), T)
    assert halted.action == DecisionAction.HALT


@given(hs.text(alphabet="PFI", max_size=12))
def test_decisions_are_deterministic_and_never_roll_back_without_enough_failures(verdicts: str) -> None:
    hist = _hist("b", Role.CANARY, 7, verdicts)
    first = d.decide_rollout(CANARY, hist, T)
    assert first == d.decide_rollout(CANARY, hist, T)
    if first.action == DecisionAction.ROLLBACK:
        assert verdicts.replace("I", "").endswith("FFF")
    if first.action == DecisionAction.PROMOTE:
        assert verdicts.replace("I", "").endswith("PPP")


def test_history_keeps_what_the_longest_streak_needs() -> None:
    t = Thresholds(successful_analyses=30)
    hist: list[dict[str, Any]] = []
    for i in range(40):
        hist = d.append_history(hist, {"i": i}, t)
    assert len(hist) == 31 and hist[-1] == {"i": 39}
    short: list[dict[str, Any]] = []
    for i in range(40):
        short = d.append_history(short, {"i": i}, T)
    assert len(short) == d.HISTORY_LIMIT


# --- workloads --------------------------------------------------------------------------------------


def test_workloads_stable_canary_and_standby() -> None:
    revs = Revisions(stable="b", canary="c", previous="a")
    got = d.plan_workloads(revs, replicas=3, canary_replicas=1, standby_replicas=1)
    assert got == [
        d.Workload("b", Role.STABLE, 3, True),
        d.Workload("c", Role.CANARY, 1, True),
        d.Workload("a", Role.STANDBY, 1, False),
    ]


def test_replace_mode_takes_stable_replicas_and_hpa_keeps_its_count() -> None:
    revs = Revisions(stable="a", canary="b", lent=1)
    assert d.plan_workloads(revs, 2, 1, 0)[0].replicas == 1
    assert d.plan_workloads(revs, 1, 1, 0)[0].replicas == 0
    assert d.plan_workloads(revs, None, 1, 0)[0].replicas is None  # the HPA owns it


def test_status_round_trip() -> None:
    revs = Revisions("a", "b", "z", ("x",), 1, "r", True, 0.9, 5)
    raw = revs.to_status()
    assert raw["canaryMode"] == CanaryMode.REPLACE_REPLICA
    assert Revisions.from_status(raw) == revs
    assert Revisions.from_status(None) == Revisions()


# --- progress: what status (and a health check) is told about the revision under test -------------

MANUAL = Thresholds(successful_analyses=3, failure_limit=3, auto_rollback=False)


@pytest.mark.parametrize(
    ("revs", "history", "t", "want"),
    [
        # a canary's passes, then failures below the limit, in its own epoch only
        (CANARY, _hist("b", Role.CANARY, 7, "PIP"), T, ("b", Role.CANARY, 2, 0, "")),
        (
            CANARY,
            _hist("b", Role.CANARY, 6, "FFF") + _hist("b", Role.CANARY, 7, "PF"),
            T,
            ("b", Role.CANARY, 0, 1, ""),
        ),
        # at the failure limit and still the canary (autoRollback false): halted, with the reasons
        (
            CANARY,
            _hist("b", Role.CANARY, 7, "FFFF"),
            MANUAL,
            ("b", Role.CANARY, 0, 4, "p99 latency 812 ms > 500 ms"),
        ),
        # the serving revision when there is no canary
        (
            Revisions(stable="a", verified=True, epoch=3),
            _hist("a", Role.STABLE, 3, "FFF"),
            T,
            ("a", Role.STABLE, 0, 3, "p99 latency 812 ms > 500 ms"),
        ),
    ],
)
def test_progress(
    revs: Revisions, history: list[dict[str, Any]], t: Thresholds, want: tuple[Any, ...]
) -> None:
    p = d.progress(revs, history, t)
    assert p is not None
    assert (p.revision, p.role, p.passed, p.failed, p.halted) == want
    assert (p.needed, p.limit, p.auto_rollback) == (t.successful_analyses, t.failure_limit, t.auto_rollback)


def test_no_progress_when_nothing_is_analysed() -> None:
    assert d.progress(Revisions(), [], T) is None
    assert d.progress(Revisions(stable="a", failed=("a",)), _hist("a", Role.STABLE, 0, "FFF"), T) is None


@given(hs.text(alphabet="PFI", max_size=8), hs.booleans())
def test_a_halt_is_never_reported_where_decide_rollout_would_move(verdicts: str, auto: bool) -> None:
    """Either decide_rollout moves the canary away (rollback/promote) or progress says where it is;
    a halt is reported only at the failure limit with autoRollback off."""
    t = Thresholds(successful_analyses=3, failure_limit=3, auto_rollback=auto)
    history = _hist("b", Role.CANARY, 7, verdicts)
    decision = d.decide_rollout(CANARY, history, t)
    p = d.progress(decision.revisions, history, t)
    if decision.action in (DecisionAction.ROLLBACK, DecisionAction.PROMOTE):
        # the canary is gone: what is analysed next is the serving revision, with a fresh streak
        assert p is not None and p.role == Role.STABLE and (p.passed, p.failed, p.halted) == (0, 0, "")
    else:
        assert p is not None and p.revision == "b"
        assert bool(p.halted) == (p.failed >= 3) and (not p.halted or not auto)
