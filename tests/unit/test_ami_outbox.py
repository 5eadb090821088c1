"""The producer's bounded buffer: Kafka outages are buffered, overflow is counted, nothing silent."""

from __future__ import annotations

import asyncio

from producers.kafka_out import DeliveryFailed
from producers.outbox import Outbox, Pending


class FlakyPublisher:
    """Fails while ``down`` is set (as a broker outage would), records deliveries otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.delivered: list[str] = []

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise DeliveryFailed("broker unavailable")
        self.delivered.append(key)


def item(n: int) -> Pending:
    return Pending("pbx.events", f"k{n}", b"{}", f"event {n}")


def test_outage_is_buffered_then_delivered_in_order_and_overflow_counted():
    async def scenario() -> tuple[list[str], int, int]:
        pub = FlakyPublisher()
        overflowed: list[Pending] = []
        box = Outbox(pub, capacity=3, backoff_s=(0.01, 0.02), on_overflow=overflowed.append)
        stop = asyncio.Event()
        runner = asyncio.ensure_future(box.run(stop))
        accepted = [box.put(item(n)) for n in range(5)]
        assert accepted == [True, True, True, False, False]
        await asyncio.sleep(0.1)
        assert pub.delivered == [] and len(box) == 3  # still held while Kafka is down
        pub.down = False
        stop.set()
        await asyncio.wait_for(runner, 5)
        return pub.delivered, len(overflowed), box.stats.overflowed

    delivered, overflowed, counted = asyncio.run(scenario())
    assert delivered == ["k0", "k1", "k2"]
    assert overflowed == counted == 2


def test_abandon_logs_and_counts_what_is_left(caplog):
    async def scenario() -> int:
        box = Outbox(FlakyPublisher(), capacity=10)
        box.put(item(1))
        box.put(item(2))
        return box.abandon()

    assert asyncio.run(scenario()) == 2
    assert caplog.text.count("LOST") == 2
