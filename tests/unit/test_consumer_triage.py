"""The one triage of what a consumer hands out (``callback.kafka_io.is_record``): a record, the end of
a partition, a passing error (logged), or a consumer that failed for good (``ConsumerFailed``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError

from callback.kafka_io import ConsumerFailed, is_record


@dataclass
class Handed:
    err: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self.err


def test_a_record_is_processed():
    assert is_record(Handed(), "t") is True


def test_the_end_of_a_partition_is_skipped_silently(caplog):
    with caplog.at_level(logging.WARNING):
        assert is_record(Handed(KafkaError(KafkaError._PARTITION_EOF)), "t") is False
    assert caplog.text == ""


def test_a_passing_error_is_logged_and_skipped(caplog):
    with caplog.at_level(logging.WARNING):
        assert is_record(Handed(KafkaError(KafkaError._TRANSPORT, "broker down")), "sink consumer") is False
    assert "sink consumer" in caplog.text and "broker down" in caplog.text


@pytest.mark.parametrize(
    "err",
    [
        KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer", fatal=False),
        KafkaError(KafkaError.FENCED_INSTANCE_ID, "fenced", fatal=True),
    ],
    ids=["code _FATAL without the flag", "flagged fatal"],
)
def test_an_error_the_consumer_cannot_recover_from_raises(err):
    with pytest.raises(ConsumerFailed) as raised:
        is_record(Handed(err), "t")
    assert raised.value.args[0] is err
