"""A Kafka record as a consumer hands it out, for the unit tests of the stages and their loop."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError


@dataclass
class FakeMessage:
    _value: bytes | None
    _key: bytes | None = None
    _partition: int = 0
    _offset: int = 0
    _topic: str = "t"
    #: an error record (end of partition, a consumer failure) instead of a record
    _error: KafkaError | None = None

    def value(self):
        return self._value

    def key(self):
        return self._key

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def topic(self):
        return self._topic

    def error(self) -> KafkaError | None:
        """None for a record, what went wrong for an error record."""
        return self._error
