"""kopf's peering rule as the loop applies it (deepseek_operator.peering.paused), and the CLI's
checks of the namespaces and peering flags."""

from __future__ import annotations

import datetime as dt

import pytest

from deepseek_operator.__main__ import main
from deepseek_operator.peering import auto_priority, paused

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)
ME = "me@1/aa"


def _seen(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).isoformat()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, True),  # no peering object: kopf waits for it
        ({}, False),  # nobody else
        ({ME: {"priority": 5, "lifetime": 10, "lastseen": _seen(0)}}, False),  # only me
        ({"other": {"priority": 9, "lifetime": 10, "lastseen": _seen(3)}}, True),  # higher, alive
        ({"other": {"priority": 5, "lifetime": 10, "lastseen": _seen(3)}}, True),  # same: all pause
        ({"other": {"priority": 1, "lifetime": 10, "lastseen": _seen(3)}}, False),  # lower
        ({"other": {"priority": 9, "lifetime": 10, "lastseen": _seen(10)}}, False),  # dead at deadline
        ({"other": {"priority": 9, "lifetime": 10, "lastseen": _seen(11)}}, False),  # dead
        ({"other": {"priority": 9, "lastseen": _seen(30)}}, True),  # no lifetime: 60 s, as kopf
        ({"other": {"priority": 9}}, True),  # no lastseen: seen now, as kopf
        ({"other": {"priority": 9, "lifetime": 10, "lastseen": "2026-12-01T11:59:55Z"}}, True),
    ],
)
def test_paused_follows_kopfs_rule(status: dict[str, object] | None, expected: bool) -> None:
    assert paused(status, ME, 5, NOW) is expected


def test_auto_priority_lets_the_first_started_replica_win_and_differs_between_replicas() -> None:
    first, later = auto_priority(1_000_000, 999), auto_priority(1_000_001, 0)
    assert first > later
    assert auto_priority(5, 1) != auto_priority(5, 2)
    assert auto_priority(5, 1001) == auto_priority(5, 1)


@pytest.mark.parametrize("bad", ["Team_A", "team-*", ""])
def test_a_namespace_that_is_not_a_name_is_refused_naming_the_flag(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--namespace", bad]) == 2
    err = capsys.readouterr().err
    assert f"--namespace {bad!r} is not a namespace name" in err and "exact name" in err


def test_a_peering_lifetime_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--peering", "p", "--peering-lifetime", "1"]) == 2
    assert "--peering-lifetime 1: give 2 to 600 seconds" in capsys.readouterr().err


def test_a_store_replaced_for_one_namespace_keeps_the_others() -> None:
    from deepseek_operator.kube.watch import Store  # noqa: PLC0415

    store = Store("Pod")
    for ns, name in (("a", "p1"), ("a", "p2"), ("b", "p3")):
        store.put({"metadata": {"namespace": ns, "name": name, "resourceVersion": "1"}})
    fresh = {"metadata": {"namespace": "a", "name": "p9", "resourceVersion": "2"}}
    changed, gone = store.replace([fresh], "a")
    assert changed == [fresh]
    assert sorted(o["metadata"]["name"] for o in gone) == ["p1", "p2"]
    assert sorted(o["metadata"]["name"] for o in store.items()) == ["p3", "p9"]


def test_a_paused_controller_parks_what_comes_up_and_passes_it_on_resuming() -> None:
    from deepseek_operator.reconcile.controller import Controller  # noqa: PLC0415

    c = Controller(workers=0, active=False)
    body = {"metadata": {"namespace": "llm", "name": "known", "resourceVersion": "3"}}
    c.cache.resources.put(body)
    assert c._parked_while_paused(("llm", "woke"))  # a worker took it while paused: parked
    c.resume()
    assert not c._parked_while_paused(("llm", "other"))  # active: a worker makes the pass
    taken = set()
    for _ in range(2):
        key = c.queue.get()
        assert key is not None
        taken.add(key)
        c.queue.done(key)
    assert taken == {("llm", "woke"), ("llm", "known")}
    c.pause()
    assert c._parked_while_paused(("llm", "woke"))
    c.queue.shutdown()


def test_the_peering_watch_says_each_change_once() -> None:
    from deepseek_operator.peering import PeeringConfig, PeeringWatch  # noqa: PLC0415

    said: list[bool] = []
    watch = PeeringWatch(PeeringConfig("p", ME, 5, 10), said.append)
    assert watch.evaluate(NOW) is False and said == []  # not listed yet: paused, nothing said
    watch._informer.synced.set()
    assert watch.evaluate(NOW) is False and said == [False]  # listed, no peering object: paused
    other = {"other": {"priority": 9, "lifetime": 10, "lastseen": _seen(2)}}
    watch._informer.store.put({"metadata": {"name": "p", "resourceVersion": "1"}, "status": other})
    assert watch.evaluate(NOW) is False and said == [False]
    assert watch.evaluate(NOW + dt.timedelta(seconds=9)) is True and said == [False, True]  # it died
    assert watch.evaluate(NOW + dt.timedelta(seconds=20)) is True and said == [False, True]
