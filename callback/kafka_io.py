"""Kafka client configuration shared by every process, and the dead-letter writer.

Producers are idempotent with acks=all (docs/processors.md, "Guarantees"); consumers never auto-commit,
so each process commits only after its effect is durable. ``extra`` from settings lets a carrier add
SASL/TLS.

Every producer partitions keys with ``murmur2_random``, the Java client's hash, which is also what
aiokafka (and so the Faust processors) uses. librdkafka's default (CRC32) would put most keys on
another partition than the processors' own sends, and a callback's initiation, PBX events and timer
ticks must meet on the one partition whose worker owns the session.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from confluent_kafka import Producer

from callback.settings import get_settings
from schemas.envelope import DeadLetter
from schemas.topics import dead_letter_topic

log = logging.getLogger(__name__)


def base_config() -> dict[str, Any]:
    kafka = get_settings().kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
    }
    conf.update(kafka.extra)
    return conf


def producer_config(transactional_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    conf = base_config() | {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "partitioner": "murmur2_random",
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
    conf.update(overrides)
    return conf


def consumer_config(group_id: str, *, read_committed: bool = True, **overrides: Any) -> dict[str, Any]:
    conf = base_config() | {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if read_committed else "read_uncommitted",
    }
    conf.update(overrides)
    return conf


def dead_letter(
    producer: Producer,
    *,
    source: str,
    source_topic: str,
    reason: str,
    error_kind: str,
    key: bytes | None,
    value: bytes | None,
    partition: int | None = None,
    offset: int | None = None,
    details: dict[str, Any] | None = None,
) -> DeadLetter:
    """Send an unprocessable record to ``dlq.<source_topic>`` with the reason and its original bytes."""
    letter = DeadLetter(
        source=source,
        source_topic=source_topic,
        source_partition=partition,
        source_offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        value_b64=base64.b64encode(value).decode() if value is not None else None,
        reason=reason,
        error_kind=error_kind,
        details=details or {},
    )
    producer.produce(dead_letter_topic(source_topic), key=key, value=letter.to_bytes())
    log.warning("dead-lettered %s[%s]@%s: %s (%s)", source_topic, partition, offset, reason, error_kind)
    return letter
