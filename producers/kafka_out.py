"""Publishing from asyncio code to Kafka with a delivery report per record.

confluent-kafka's Producer is thread-based: ``produce`` queues, ``poll`` fires delivery callbacks. A
daemon thread polls, and each ``publish`` returns an asyncio future resolved from that thread, so a
caller can await "the broker has it (acks=all)" before telling a client 202, or before forgetting an
AMI event it buffered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from callback.kafka_io import producer_config

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    """The broker did not take the record (message timeout, authorisation, unknown topic...)."""


class Publisher(Protocol):
    async def publish(self, topic: str, key: str, value: bytes) -> None: ...


class KafkaPublisher:
    """Idempotent acks=all producer with an awaitable delivery per record."""

    def __init__(self, client_id: str, **overrides: Any) -> None:
        conf = producer_config(**{"client.id": client_id, "message.timeout.ms": 30_000} | overrides)
        self._producer = Producer(conf)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name=f"{client_id}-kafka-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if future.done():
                return
            if err is None:
                loop.call_soon_threadsafe(_set_result, future)
            else:
                loop.call_soon_threadsafe(_set_exception, future, DeliveryFailed(f"{topic}: {err.str()}"))

        while True:
            try:
                self._producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let the poll thread drain it
                await asyncio.sleep(0.05)
            except KafkaException as exc:
                raise DeliveryFailed(f"{topic}: {exc}") from exc
        await future

    def flush(self, timeout_s: float = 10.0) -> int:
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        remaining = self.flush(timeout_s)
        if remaining:
            log.error("%d record(s) still undelivered at shutdown", remaining)
        self._stop.set()
        self._thread.join(timeout=2)


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _set_exception(future: asyncio.Future[None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
