"""Every librdkafka producer of the pipeline puts a key on the partition aiokafka (Faust) would:
a callback's initiation (AMI producer, web API), its PBX events (AMI producer, originator) and its
timer ticks (processors) must meet on the partition of the worker that owns its session."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Producer

from callback.kafka_io import producer_config
from schemas.topics import CALLBACK_SESSIONS

pytestmark = pytest.mark.integration


def test_our_producers_partition_keys_like_the_faust_side(stack):
    keys = [f"pbx1.pbx-sim-{uuid.uuid4().hex[:10]}.{i}".encode() for i in range(300)]
    partitions = list(range(CALLBACK_SESSIONS.partitions))
    expected = {key: DefaultPartitioner()(key, partitions, partitions) for key in keys}
    assert len(set(expected.values())) == len(partitions)  # the keys spread: the check can fail
    got: dict[bytes, int] = {}
    producer = Producer(producer_config())
    for key in keys:
        producer.produce(
            CALLBACK_SESSIONS.name,
            key=key,
            value=b"{}",  # not a transition: readers skip it (no callback_id)
            on_delivery=lambda err, msg: got.__setitem__(msg.key(), msg.partition()) if err is None else None,
        )
    assert producer.flush(30) == 0
    assert got == expected
