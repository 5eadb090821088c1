"""Read Kafka topics from a starting point to their current end: how every process rebuilds state.

The one reader of "a topic as it is now" that rating, the processors, the producers and the web
import (docs/architecture.md): a throwaway consumer that never commits, read_committed isolation
(an aborted transaction of a crashed writer is never taken for state), and an end that is found
even when the last offset of a partition is a transaction marker no record reaches.

- ``read_latest``: the current value per key of a compacted topic (``accounts.balances`` for the
  rater's ledger and the billing view).
- ``read_topics`` / ``read_to_end``: every record, for folds of their own
  (``callback.reference_feed`` keeps the ``config.*`` fold current with them; the rater rebuilds
  its recently charged leg ids from ``cdr.rated``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import BaseModel, ValidationError

from callback.kafka_io import consumer_config

log = logging.getLogger(__name__)

OnRecord = Callable[[Message], None]
M = TypeVar("M", bound=BaseModel)


def partitions_of(consumer: Consumer, topic: str, timeout_s: float = 30.0) -> list[int]:
    """Partition numbers of ``topic``; raises if the topic does not exist."""
    meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    if meta.error is not None:
        raise KafkaException(meta.error)
    return sorted(meta.partitions)


def state_consumer(purpose: str, **overrides: object) -> Consumer:
    """A consumer that never commits: it only rebuilds state (a throwaway group id)."""
    conf = consumer_config(
        f"callback-{purpose}-{uuid.uuid4().hex[:8]}",
        read_committed=True,
        **{"enable.partition.eof": True, "fetch.wait.max.ms": 100, **overrides},
    )
    return Consumer(conf)


def watermarks(consumer: Consumer, topic: str, partition: int, timeout_s: float = 30.0) -> tuple[int, int]:
    """(low, high) watermarks of one partition, riding out the moment after a broker starts or a
    leader moves, when the broker answers NOT_LEADER_FOR_PARTITION for a partition it is about to
    lead (seen on a freshly started stack)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        except KafkaException as exc:
            err = exc.args[0]
            leadership = err.code() in (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
            if not (err.retriable() or leadership) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_to_end(
    consumer: Consumer, assignment: Iterable[TopicPartition], on_record: OnRecord, timeout_s: float = 120.0
) -> int:
    """Assign ``assignment`` and feed every record up to the current end to ``on_record``.

    "End" is the high watermark sampled now; with read_committed the consumer stops at the last
    stable offset, which equals it once no transaction is open. Returns the records read.
    """
    parts = list(assignment)
    if not parts:
        return 0
    pending: set[tuple[str, int]] = set()
    for tp in parts:
        _low, high = watermarks(consumer, tp.topic, tp.partition)
        start = tp.offset
        if high > 0 and (start < 0 or start < high):
            pending.add((tp.topic, tp.partition))
    # assign even when there is nothing to read yet: a caller that follows the topics afterwards
    # (the rater's reference feed on a fresh cluster) must still be subscribed to what comes next
    consumer.assign(parts)
    if not pending:
        return 0
    count = 0
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not read {sorted(pending)} to the end within {timeout_s:.0f} s")
        for msg in consumer.consume(num_messages=10_000, timeout=0.5):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                    continue
                raise KafkaException(err)
            on_record(msg)
            count += 1
        if pending:  # an EOF may have been swallowed by a control record: check positions too
            positions = consumer.position([TopicPartition(t, p) for t, p in pending])
            for tp in positions:
                _low, high = watermarks(consumer, tp.topic, tp.partition, timeout_s=5.0)
                if tp.offset >= 0 and tp.offset >= high:
                    pending.discard((tp.topic, tp.partition))
    return count


def read_topics(purpose: str, topics: Iterable[str], on_record: OnRecord) -> int:
    """Feed every committed record of ``topics``, from the beginning to the current end, to
    ``on_record``, with a throwaway consumer (``purpose`` names its group in broker logs)."""
    consumer = state_consumer(purpose)
    try:
        return read_to_end(consumer, whole_topics(consumer, topics), on_record)
    finally:
        consumer.close()


def read_latest(topic: str, model: type[M], *, purpose: str | None = None) -> dict[str, M]:
    """The current value of every key of the compacted ``topic``: its last committed record, read
    to the end, validated as ``model``.

    A key whose last record is a tombstone is absent. An invalid record is logged and skipped, so
    the key keeps its previous value: one bad record from some tool must neither stop the reader
    nor erase an entry (the rule ``callback.reference.ReferenceData`` applies to ``config.*``)."""
    latest: dict[str, M] = {}
    rejected = 0

    def on(msg: Message) -> None:
        nonlocal rejected
        raw_key = msg.key()
        key = raw_key.decode(errors="replace") if raw_key else ""
        value = msg.value()
        if value is None:
            latest.pop(key, None)
            return
        try:
            latest[key] = model.model_validate_json(value)
        except ValidationError as exc:
            rejected += 1
            log.error(
                "ignoring invalid %s record %r (the previous value stays): %s",
                topic,
                key,
                exc.errors(include_url=False)[:2],
            )

    read_topics(purpose or f"latest-{topic}", [topic], on)
    if rejected:
        log.warning("%s: %d invalid record(s) skipped", topic, rejected)
    return latest


def whole_topics(consumer: Consumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, from the beginning."""
    return [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in partitions_of(consumer, t)]


def since_time(consumer: Consumer, topic: str, since_ms: int) -> list[TopicPartition]:
    """Every partition of ``topic`` from the first record at or after ``since_ms`` (epoch ms)."""
    wanted = [TopicPartition(topic, p, since_ms) for p in partitions_of(consumer, topic)]
    found = consumer.offsets_for_times(wanted, timeout=30.0)
    out = []
    for tp in found:
        if tp.offset >= 0:  # -1: nothing that recent in this partition
            out.append(TopicPartition(topic, tp.partition, tp.offset))
    return out
