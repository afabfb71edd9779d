"""The work queue's client-go semantics, and the hold on progress-only writes."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepseek_operator.reconcile.queue import ProgressHold, WorkQueue

pytestmark = pytest.mark.unit


def test_a_key_added_many_times_waits_once() -> None:
    q: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert q.get() == "a"
    assert q.get() == "b"
    assert len(q) == 0


def test_a_key_added_while_handled_comes_back_after_done_not_to_a_second_worker() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a")
    assert q.get() == "a"
    q.add("a")
    assert q.pending("a")
    assert len(q) == 0  # not ready while a worker has it
    q.done("a")
    assert q.get() == "a"
    assert not q.pending("a")


def test_a_key_added_for_later_is_not_ready_before_its_time() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("later", delay=0.15)
    q.add("now")
    assert q.get() == "now"
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    t.join(0.05)
    assert got == []  # still waiting
    t.join(2.0)
    assert got == ["later"]


def test_shutdown_wakes_a_waiting_get_with_none() -> None:
    q: WorkQueue[str] = WorkQueue()
    got: list[str | None] = ["unset"]
    t = threading.Thread(target=lambda: got.__setitem__(0, q.get()))
    t.start()
    q.shutdown()
    t.join(2.0)
    assert got == [None]


def test_progress_waits_the_window_from_the_first_hold_then_writes() -> None:
    hold: ProgressHold[str] = ProgressHold(0.2)
    assert hold.hold("a", 10.0) == pytest.approx(0.2)
    assert hold.hold("a", 10.15) == pytest.approx(0.05)  # from the first hold, not this one
    assert hold.hold("a", 10.2) is None  # the window is over: write now
    assert "a" in hold
    hold.release("a")
    assert "a" not in hold
    assert hold.hold("a", 11.0) == pytest.approx(0.2)  # after a write, the next progress waits again


def test_keys_are_held_apart() -> None:
    hold: ProgressHold[str] = ProgressHold(0.2)
    assert hold.hold("a", 0.0) == pytest.approx(0.2)
    assert hold.hold("b", 0.1) == pytest.approx(0.2)
    assert hold.hold("a", 0.25) is None
    assert hold.hold("b", 0.25) == pytest.approx(0.05)


@given(st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=20))
def test_no_progress_waits_longer_than_the_window_after_its_first_hold(steps: list[float]) -> None:
    hold: ProgressHold[int] = ProgressHold(0.2)
    now = 0.0
    first = now
    for step in steps:
        left = hold.hold(1, now)
        if left is None:
            assert now - first >= 0.2 - 1e-9
            hold.release(1)
            first = now + step
        else:
            assert 0 < left <= 0.2 + 1e-9
            assert now + left == pytest.approx(first + 0.2)
        now += step
