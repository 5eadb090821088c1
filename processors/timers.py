"""Durable retry timers without scanning every session: an in-memory wheel over the table.

The due time of every session lives in the session itself (``Session.due_at``, in the Faust
table, so it survives a crash). This worker keeps, in memory, a heap of the due times of the
sessions of *its* partitions:

* the session agent schedules a session's timer whenever it stores the session (or clears it);
* after every rebalance, once the table is recovered, the heap is rebuilt from the table for the
  partitions this worker now owns (``rebuild``): a timer that came due while its worker was dead
  fires at once, on the worker that took the partition over;
* every ``tick_interval`` the timer loop takes what is due (``take_due``) and produces one tick per
  session to ``callback.control``, keyed by callback id, so the tick lands in the session's own
  partition and the agent applies it like any other input (tables change only inside the stream);
* a tick in flight is remembered until the session is stored again with another timer; if it is
  still current after ``resend_after_s`` (a lost send, a slow rebalance), the sweep sends it again.

Repeated ticks are harmless: the agent acts on a tick only if the session still waits for exactly
that timer (``timer_seq`` and kind), so a tick fires its timer once. Pure: the caller passes the
time and does the producing.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.control import TimerKind, TimerTick


@dataclass(frozen=True, order=True)
class Due:
    at: float  # epoch seconds
    callback_id: str
    timer_seq: int
    kind: TimerKind
    partition: int

    def tick(self, source: str, now: float) -> TimerTick:
        """The tick for this timer; its id is the same every time, so a resend is one input."""
        return TimerTick(
            event_id=f"tick:{self.callback_id}:{self.timer_seq}",
            source=source,
            time=datetime.fromtimestamp(now, UTC),
            callback_id=self.callback_id,
            timer_seq=self.timer_seq,
            kind=self.kind,
            due_at=datetime.fromtimestamp(self.at, UTC),
        )


class TimerWheel:
    def __init__(self, resend_after_s: float = 2.0, max_in_flight: int = 1000) -> None:
        self.resend_after_s = resend_after_s
        #: ticks in flight at most: the rest of what is due waits in the heap (``take_due``)
        self.max_in_flight = max_in_flight
        self._heap: list[Due] = []
        #: the timer each session waits for now (what the heap entries are checked against)
        self._current: dict[str, Due] = {}
        #: ticks sent and not yet superseded: callback id -> (timer, when it was last sent)
        self._in_flight: dict[str, tuple[Due, float]] = {}

    def __len__(self) -> int:
        return len(self._current)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def schedule(self, due: Due) -> None:
        """The session now waits for ``due`` (replacing whatever it waited for)."""
        if self._current.get(due.callback_id) == due:
            return
        self._current[due.callback_id] = due
        self._in_flight.pop(due.callback_id, None)
        heapq.heappush(self._heap, due)

    def clear(self, callback_id: str) -> None:
        """The session waits for nothing (or is gone)."""
        self._current.pop(callback_id, None)
        self._in_flight.pop(callback_id, None)

    def rebuild(self, timers: Iterable[Due]) -> None:
        """Replace everything with ``timers`` (after a rebalance: this worker's partitions)."""
        self._current = {d.callback_id: d for d in timers}
        self._heap = list(self._current.values())
        heapq.heapify(self._heap)
        self._in_flight = {}

    def take_due(self, now: float) -> list[Due]:
        """Timers due at ``now`` that the sessions still wait for, earliest first; they become in
        flight. At most ``max_in_flight`` are in flight at once: a backlog of overdue timers (a
        worker back after an outage) goes out as the agent applies the ticks before it, so the
        session inputs that arrive meanwhile wait behind a bounded number of ticks."""
        fired: list[Due] = []
        heap = self._heap
        while heap and heap[0].at <= now and len(self._in_flight) < self.max_in_flight:
            due = heapq.heappop(heap)
            if self._current.get(due.callback_id) != due or due.callback_id in self._in_flight:
                continue  # superseded (the session moved on) or already sent
            self._in_flight[due.callback_id] = (due, now)
            fired.append(due)
        return fired

    def overdue(self, now: float, passed: Callable[[str], bool] = lambda _cb: True) -> list[Due]:
        """In-flight ticks still current after ``resend_after_s``: send them again.

        ``passed(callback_id)`` says whether the agent has read past the tick sent last (or its send
        failed): only then is a tick still current after the wait really lost. While the agent
        works through a backlog, a tick waiting its turn is not sent again."""
        again = []
        for callback_id, (due, sent_at) in list(self._in_flight.items()):
            if self._current.get(callback_id) != due:
                del self._in_flight[callback_id]
            elif now - sent_at >= self.resend_after_s and passed(callback_id):
                self._in_flight[callback_id] = (due, now)
                again.append(due)
        return again

    def next_due(self) -> float | None:
        """Epoch seconds of the earliest pending timer (None when there is none)."""
        while self._heap and self._current.get(self._heap[0].callback_id) != self._heap[0]:
            heapq.heappop(self._heap)
        return self._heap[0].at if self._heap else None
