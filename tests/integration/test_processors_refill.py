"""Faust's fetcher can drop a record it was handing to the stream when the flow is suspended at that
moment (seen in a chaos run: two initiations lost to the worker that had just started). The
sessions agent notices the jump in offsets and reads the records in between again from Kafka."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer
from faust.types import TP
from faust.types.tuples import Message

from callback.kafka_io import producer_config
from callback.settings import get_settings
from processors.app import Processors
from schemas.topics import CALLBACK_CONTROL

pytestmark = pytest.mark.integration


def test_a_jump_in_offsets_is_filled_from_kafka_in_order(stack):
    topic, partition = CALLBACK_CONTROL.name, 0
    producer = Producer(producer_config())
    offsets: list[int] = []
    for i in range(6):
        producer.produce(topic, key=b"refill", value=f"record {i}".encode(), partition=partition,
                         on_delivery=lambda err, msg: offsets.append(msg.offset()))
    assert producer.flush(10) == 0
    first, last = offsets[0], offsets[-1]
    processors = Processors(get_settings())
    try:
        processors.app.consumer._committed_offset[TP(topic, partition)] = first  # what Kafka says

        def delivered(offset: int) -> Message:
            return Message(topic, partition, offset, 0.0, 0, None, b"refill", b"x", None)

        # Faust hands over the 6th record first: the five before it were dropped
        missed = asyncio.run(processors._skipped_before(delivered(last)))
        assert [m.message.offset for m in missed] == offsets[:-1]
        assert [m.message.value for m in missed] == [f"record {i}".encode() for i in range(5)]
        # the next record, and one Faust delivers again (a replay), fill nothing
        assert asyncio.run(processors._skipped_before(delivered(last + 1))) == []
        assert asyncio.run(processors._skipped_before(delivered(first))) == []
    finally:
        processors.feed.close()
