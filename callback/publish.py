"""Publishing a validated carrier configuration to the compacted ``config.*`` topics.

Here, beside ``callback/kafka_io.py``, rather than in ``schemas/``: the contracts package validates
the file and yields its records, and imports no Kafka client (a unit test holds it to that).
``callback config load`` (``callback/config_cli.py``) publishes through ``publish_config``.
"""

from __future__ import annotations

from collections import Counter

from confluent_kafka import KafkaException, Producer

from callback.kafka_io import producer_config
from schemas.carrier_config import CarrierConfig


def publish_config(
    config: CarrierConfig, *, transactional_id: str = "callback-config-loader", timeout_s: float = 30.0
) -> Counter[str]:
    """Publish every record in one Kafka transaction: read_committed consumers see all of it or none."""
    producer = Producer(producer_config(transactional_id))
    producer.init_transactions(timeout_s)
    producer.begin_transaction()
    counts: Counter[str] = Counter()
    try:
        for topic, key, value in config.records():
            producer.produce(topic, key=key.encode(), value=value.model_dump_json().encode())
            counts[topic] += 1
        producer.commit_transaction(timeout_s)
    except KafkaException:
        producer.abort_transaction(timeout_s)
        raise
    return counts
