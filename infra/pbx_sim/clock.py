"""Virtual time for the simulator: one speed factor scales every delay and every timestamp.

The call engine only ever asks a :class:`Scheduler` for "now" (virtual epoch seconds) and
to run something "after N virtual seconds". With ``speed=10`` a 5 s ring lasts 0.5 s of
wall time while Uniqueids, ``Ping`` timestamps and ``Timestamp`` headers advance by 5 s, so
durations computed from event timestamps stay consistent with the scenario.

:class:`ManualScheduler` runs the same engine without asyncio and without waiting, which is
how the unit tests turn a scenario into its exact event sequence.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def now(self) -> float:
        """Virtual wall-clock time, seconds since the epoch."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` after ``delay`` virtual seconds (0 = as soon as possible, in order)."""
        ...


class VirtualClock:
    """Epoch time that runs ``speed`` times faster than the real clock from its start."""

    def __init__(self, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._start_epoch = time.time() if start is None else start
        self._start_mono = time.monotonic()

    def now(self) -> float:
        return self._start_epoch + (time.monotonic() - self._start_mono) * self.speed

    def to_real(self, virtual_seconds: float) -> float:
        return max(0.0, virtual_seconds) / self.speed


class AsyncioScheduler:
    """Scheduler on an asyncio loop; virtual delays are divided by the clock speed."""

    def __init__(self, clock: VirtualClock, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.clock = clock
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        return self.clock.now()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.loop.call_later(self.clock.to_real(delay), callback)


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """Deterministic scheduler for tests: time moves only when :meth:`advance` is called."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._queue: list[_Entry] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        entry = _Entry(self._now + max(0.0, delay), next(self._seq), callback)
        heapq.heappush(self._queue, entry)
        return entry

    def advance(self, seconds: float) -> None:
        """Run everything due within the next ``seconds``, in due order."""
        self.run_until(self._now + seconds)

    def run_until(self, deadline: float) -> None:
        while self._queue and self._queue[0].due <= deadline:
            entry = heapq.heappop(self._queue)
            if entry.cancelled:
                continue
            self._now = max(self._now, entry.due)
            entry.callback()
        self._now = max(self._now, deadline)

    def run_until_idle(self, limit: float = 86_400.0) -> None:
        """Run until nothing is scheduled (or ``limit`` virtual seconds passed)."""
        deadline = self._now + limit
        while self._queue and self._queue[0].due <= deadline:
            self.run_until(self._queue[0].due)
            self._queue = [e for e in self._queue if not e.cancelled]
            heapq.heapify(self._queue)

    @property
    def pending(self) -> int:
        return sum(1 for e in self._queue if not e.cancelled)
