"""``processors.timers.TimerWheel``: due timers fire once, in order; superseded ones never; in-flight
ticks are re-sent only while still current; ``rebuild`` replaces everything; tick ids are stable."""

from __future__ import annotations

from datetime import UTC, datetime

from processors.timers import Due, TimerWheel
from schemas.control import TimerKind

W, A, E = TimerKind.WATCHDOG, TimerKind.ATTEMPT, TimerKind.EXPIRE


def due(callback_id: str, at: float, seq: int = 1, kind: TimerKind = W, partition: int = 0) -> Due:
    return Due(at, callback_id, seq, kind, partition)


def ids(dues: list[Due]) -> list[str]:
    return [d.callback_id for d in dues]


def test_only_due_timers_fire_in_due_order():
    wheel = TimerWheel()
    for d in (due("c", 30), due("a", 10), due("b", 20), due("d", 40)):
        wheel.schedule(d)
    assert wheel.take_due(5) == []
    assert ids(wheel.take_due(25)) == ["a", "b"]
    assert ids(wheel.take_due(30)) == ["c"]  # due exactly now fires
    assert wheel.next_due() == 40


def test_a_backlog_goes_out_as_the_ticks_before_it_are_applied():
    """A worker back after an outage with every timer overdue: never more than ``max_in_flight``
    ticks wait in the topic, so an initiation that arrives meanwhile is not queued behind them all."""
    wheel = TimerWheel(max_in_flight=2)
    for i in range(5):
        wheel.schedule(due(f"c{i}", i, kind=E))
    assert ids(wheel.take_due(10)) == ["c0", "c1"]
    assert wheel.take_due(10) == []  # two in flight: the rest waits
    wheel.clear("c0")  # the agent applied c0's tick (the session expired)
    assert ids(wheel.take_due(10)) == ["c2"]
    wheel.schedule(due("c1", 50, seq=2))  # c1's tick applied: the session waits for another timer
    assert ids(wheel.take_due(10)) == ["c3"]
    wheel.clear("c2")
    wheel.clear("c3")
    assert ids(wheel.take_due(10)) == ["c4"]
    assert wheel.take_due(10) == [] and wheel.in_flight == 1


def test_a_rescheduled_timer_never_fires_its_old_time():
    wheel = TimerWheel()
    wheel.schedule(due("a", 10, seq=1))
    wheel.schedule(due("a", 50, seq=2))
    assert wheel.take_due(20) == []
    assert wheel.take_due(50) == [due("a", 50, seq=2)]
    assert len(wheel) == 1


def test_a_timer_moved_earlier_fires_at_its_new_time():
    wheel = TimerWheel()
    wheel.schedule(due("a", 50, seq=1))
    wheel.schedule(due("a", 10, seq=2))
    assert wheel.take_due(10) == [due("a", 10, seq=2)]
    assert wheel.take_due(60) == []


def test_a_cleared_timer_never_fires():
    wheel = TimerWheel()
    wheel.schedule(due("a", 10))
    wheel.schedule(due("b", 10))
    wheel.clear("a")
    assert ids(wheel.take_due(100)) == ["b"]
    assert len(wheel) == 1


def test_a_taken_timer_is_not_taken_twice():
    wheel = TimerWheel()
    wheel.schedule(due("a", 10))
    assert ids(wheel.take_due(10)) == ["a"]
    wheel.schedule(due("a", 10))  # the session stored again with the same timer
    assert wheel.take_due(100) == []
    assert wheel.in_flight == 1


def test_next_due_skips_superseded_timers():
    wheel = TimerWheel()
    wheel.schedule(due("a", 10, seq=1))
    wheel.schedule(due("b", 30))
    wheel.schedule(due("a", 40, seq=2))
    assert wheel.next_due() == 30
    wheel.clear("b")
    assert wheel.next_due() == 40
    wheel.clear("a")
    assert wheel.next_due() is None


def test_overdue_resends_in_flight_ticks_after_resend_after_s():
    wheel = TimerWheel(resend_after_s=2.0)
    wheel.schedule(due("a", 10))
    wheel.take_due(10)
    assert wheel.overdue(11.9) == []
    assert wheel.overdue(12.0) == [due("a", 10)]
    assert wheel.overdue(13.0) == []  # re-sent at 12: the next resend is due at 14
    assert wheel.overdue(14.0) == [due("a", 10)]


def test_overdue_drops_ticks_that_are_no_longer_current():
    wheel = TimerWheel(resend_after_s=2.0)
    wheel.schedule(due("a", 10, seq=1))
    wheel.schedule(due("b", 10, seq=1))
    wheel.take_due(10)
    wheel.schedule(due("a", 60, seq=2))  # the tick moved session a on
    wheel.clear("b")  # session b is gone
    assert wheel.overdue(20) == []
    assert wheel.in_flight == 0


def test_a_new_timer_of_a_session_fires_even_while_its_old_tick_was_in_flight():
    wheel = TimerWheel()
    wheel.schedule(due("a", 10, seq=1))
    wheel.take_due(10)
    wheel.schedule(due("a", 20, seq=2))
    assert wheel.take_due(20) == [due("a", 20, seq=2)]


def test_rebuild_replaces_everything():
    wheel = TimerWheel()
    wheel.schedule(due("old", 5))
    wheel.schedule(due("taken", 1))
    wheel.take_due(1)
    wheel.rebuild([due("x", 3, partition=2), due("y", 1, partition=2)])
    assert len(wheel) == 2 and wheel.in_flight == 0
    assert ids(wheel.take_due(10)) == ["y", "x"]  # "old" and "taken" are gone
    assert wheel.take_due(100) == []
    assert sorted(ids(wheel.overdue(100))) == ["x", "y"]


def test_rebuild_fires_timers_that_came_due_while_nobody_owned_them():
    wheel = TimerWheel()
    wheel.rebuild([due("a", 5, seq=3, kind=A)])
    assert wheel.take_due(1000) == [due("a", 5, seq=3, kind=A)]


def test_rebuild_forgets_in_flight_ticks():
    wheel = TimerWheel()
    wheel.schedule(due("a", 5))
    wheel.take_due(5)
    wheel.rebuild([due("a", 5)])
    assert wheel.in_flight == 0
    assert wheel.take_due(5) == [due("a", 5)]  # the new owner sends it again: harmless, same tick id


def test_tick_ids_are_deterministic():
    d = due("cb-7", 1_800_000_000.5, seq=4, kind=E)
    first, again = d.tick("timers", now=1_800_000_001.0), d.tick("timers-2", now=1_800_000_099.0)
    assert first.event_id == again.event_id == "tick:cb-7:4"
    assert (first.callback_id, first.timer_seq, first.kind) == ("cb-7", 4, E)
    assert first.due_at == datetime.fromtimestamp(1_800_000_000.5, UTC)
    assert first.time == datetime.fromtimestamp(1_800_000_001.0, UTC)
    assert due("cb-7", 1, seq=5).tick("t", 1).event_id != first.event_id


def test_a_timer_scheduled_again_after_a_detour_fires_once():
    wheel = TimerWheel()
    wheel.schedule(due("a", 10, seq=1))
    wheel.schedule(due("a", 30, seq=2))
    wheel.schedule(due("a", 10, seq=1))  # back to the first one: the heap now holds it twice
    assert wheel.take_due(100) == [due("a", 10, seq=1)]
    assert wheel.take_due(100) == []


def test_a_tick_waiting_in_a_backlog_is_not_sent_again_until_the_agent_read_past_it():
    from processors.timers import Due, TimerWheel
    from schemas.control import TimerKind

    wheel = TimerWheel(resend_after_s=2.0)
    due = Due(100.0, "cb-1", 1, TimerKind.ATTEMPT, 0)
    wheel.schedule(due)
    assert wheel.take_due(100.0) == [due]
    read_past = {"cb-1": False}
    assert wheel.overdue(110.0, lambda cb: read_past[cb]) == []  # still queued: not lost
    read_past["cb-1"] = True  # the agent read past it and the session still waits: lost
    assert wheel.overdue(110.0, lambda cb: read_past[cb]) == [due]
