"""The Kafka side of the reference fold without a broker: ``ReferenceFeed.poll`` on a scripted
consumer (aliases, end-of-partition events) and ``ReferenceFollower``'s load, retry and updates."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError, KafkaException

from callback import reference_feed
from callback.reference import ReferenceData
from callback.reference_feed import CONFIG_TOPIC_NAMES, ReferenceFeed, ReferenceFollower
from schemas.reference import User
from schemas.topics import CONFIG_TOPICS


class Msg:
    def __init__(self, topic: str, key: bytes | None, value: bytes | None, error: KafkaError | None = None):
        self._topic, self._key, self._value, self._error = topic, key, value, error

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error


class ScriptedConsumer:
    def __init__(self) -> None:
        self.batches: list[list[Msg]] = []
        self.closed = False

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        return self.batches.pop(0) if self.batches else []

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def consumer(monkeypatch) -> ScriptedConsumer:
    scripted = ScriptedConsumer()
    monkeypatch.setattr(reference_feed, "state_consumer", lambda purpose: scripted)
    return scripted


def _user(user_id: str) -> bytes:
    return User(user_id=user_id, name=user_id, tariff_id="t").model_dump_json().encode()


def test_a_feed_reads_every_config_topic_by_default():
    assert CONFIG_TOPIC_NAMES == tuple(t.name for t in CONFIG_TOPICS) and len(CONFIG_TOPIC_NAMES) == 8


def test_poll_applies_records_through_aliases_and_counts_only_records(consumer):
    feed = ReferenceFeed(("bench.x.config.users",), {"bench.x.config.users": "config.users"})
    eof = KafkaError(KafkaError._PARTITION_EOF)
    consumer.batches.append(
        [
            Msg("bench.x.config.users", b"ann", _user("ann")),
            Msg("bench.x.config.users", None, None, eof),
            Msg("bench.x.config.users", b"bo", _user("bo")),
        ]
    )
    assert feed.poll() == 2
    assert set(feed.data.users) == {"ann", "bo"} and feed.data.version == 2
    consumer.batches.append([Msg("bench.x.config.users", b"ann", None)])
    assert feed.poll() == 1 and set(feed.data.users) == {"bo"}
    assert feed.poll() == 0
    feed.close()
    assert consumer.closed


def test_a_key_that_is_not_utf8_is_a_rejected_record_not_a_crash(consumer):
    feed = ReferenceFeed()
    consumer.batches.append([Msg("config.users", b"\xff", _user("ann"))])
    assert feed.poll() == 1
    assert feed.data.users == {} and feed.data.rejected == 1


class FlakyFeed:
    """``load`` fails ``failures`` times (cluster not there yet), then folds one user."""

    def __init__(self, failures: int) -> None:
        self.data = ReferenceData()
        self.failures = failures
        self.loads = 0
        self.updates: list[tuple[str, bytes | None]] = []
        self.closed = threading.Event()

    def load(self) -> ReferenceData:
        self.loads += 1
        if self.loads <= self.failures:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        self.data.apply("config.users", "ann", _user("ann"))
        return self.data

    def poll(self, timeout_s: float = 0.0) -> int:
        if not self.updates:
            threading.Event().wait(timeout_s)
            return 0
        key, value = self.updates.pop(0)
        self.data.apply("config.users", key, value)
        return 1

    def close(self) -> None:
        self.closed.set()


def test_the_follower_retries_the_load_then_reports_each_change():
    feed = FlakyFeed(failures=2)
    seen: list[tuple[int, tuple[str, ...]]] = []
    changed = threading.Event()

    def on_change(data: ReferenceData) -> None:
        seen.append((data.version, tuple(sorted(data.users))))
        changed.set()

    follower = ReferenceFollower(feed, on_change, poll_s=0.01, retry_s=0.01)  # type: ignore[arg-type]
    try:
        assert follower.start(wait_s=5)
        assert feed.loads == 3 and seen == [(1, ("ann",))]
        changed.clear()
        feed.updates.append(("bo", _user("bo")))
        assert changed.wait(5)
        changed.clear()
        feed.updates.append(("ann", None))
        assert changed.wait(5)
    finally:
        follower.stop()
    assert seen == [(1, ("ann",)), (2, ("ann", "bo")), (3, ("bo",))], "empty polls are not changes"
    assert feed.closed.is_set()


def test_a_follower_stopped_before_the_load_succeeds_closes_its_feed():
    feed = FlakyFeed(failures=10**6)
    follower = ReferenceFollower(feed, lambda data: None, retry_s=0.01)  # type: ignore[arg-type]
    assert follower.start(wait_s=0.1) is False
    follower.stop()
    assert feed.closed.wait(5) and not follower.loaded.is_set()
