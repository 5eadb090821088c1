"""The AMI producer's bounded buffer between "read from the PBX" and "Kafka has it".

AMI does not replay: an event not kept once read is gone. So every translated record goes into this
FIFO first and leaves it only when Kafka acknowledged it (acks=all). While Kafka is unavailable the
buffer grows up to ``capacity``; beyond that a new record is refused, logged with what it was, and
counted (``callback_ami_buffer_overflow_total``) -- never dropped silently. Records are sent in
batches with a bounded number in flight; failures stay at the head and are retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from producers.kafka_out import Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    topic: str
    key: str
    value: bytes
    what: str  # one-line description for logs


@dataclass
class OutboxStats:
    accepted: int = 0
    delivered: int = 0
    overflowed: int = 0
    failures: int = 0


class Outbox:
    def __init__(
        self,
        publisher: Publisher,
        *,
        capacity: int = 100_000,
        batch: int = 500,
        backoff_s: tuple[float, float] = (0.2, 10.0),
        on_delivered: object = None,
        on_overflow: object = None,
    ) -> None:
        self.publisher = publisher
        self.capacity = capacity
        self.batch = batch
        self.backoff_min, self.backoff_max = backoff_s
        self.stats = OutboxStats()
        self._queue: deque[Pending] = deque()
        self._wakeup = asyncio.Event()
        self._on_delivered = on_delivered
        self._on_overflow = on_overflow

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, item: Pending) -> bool:
        """Queue a record; False (logged, counted) when the buffer is full."""
        if len(self._queue) >= self.capacity:
            self.stats.overflowed += 1
            if callable(self._on_overflow):
                self._on_overflow(item)
            log.error(
                "buffer full (%d records, Kafka unavailable?): LOST %s -> %s key=%s",
                self.capacity,
                item.what,
                item.topic,
                item.key,
            )
            return False
        self._queue.append(item)
        self.stats.accepted += 1
        self._wakeup.set()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set and the buffer is empty (or ``drain`` gives up)."""
        backoff = self.backoff_min
        while not (stop.is_set() and not self._queue):
            if not self._queue:
                self._wakeup.clear()
                waiter = asyncio.ensure_future(self._wakeup.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            if await self._send_batch():
                backoff = self.backoff_min
            else:
                log.warning(
                    "Kafka unavailable: %d record(s) buffered; retrying in %.1f s", len(self._queue), backoff
                )
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                except TimeoutError:
                    pass
                backoff = min(self.backoff_max, backoff * 2)

    async def _send_batch(self) -> bool:
        batch = [self._queue[i] for i in range(min(self.batch, len(self._queue)))]
        results = await asyncio.gather(
            *(self.publisher.publish(p.topic, p.key, p.value) for p in batch), return_exceptions=True
        )
        delivered = {id(p) for p, r in zip(batch, results, strict=True) if not isinstance(r, BaseException)}
        failed = [r for r in results if isinstance(r, BaseException)]
        if delivered:
            kept = deque(p for p in self._queue if id(p) not in delivered)
            for p in batch:
                if id(p) in delivered and callable(self._on_delivered):
                    self._on_delivered(p)
            self._queue = kept
            self.stats.delivered += len(delivered)
        if failed:
            self.stats.failures += len(failed)
            log.debug("%d of %d deliveries failed: %s", len(failed), len(batch), failed[0])
        return not failed

    def abandon(self) -> int:
        """At shutdown after the drain timeout: log every record still here as lost; return how many."""
        for item in self._queue:
            log.error(
                "shutting down with Kafka unavailable: LOST %s -> %s key=%s", item.what, item.topic, item.key
            )
        lost = len(self._queue)
        self._queue.clear()
        return lost
