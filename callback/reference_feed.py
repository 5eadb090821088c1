"""Keeps a ``callback.reference.ReferenceData`` current from Kafka: read to the end, then follow.

The fold itself is pure (``callback.reference``); this is the consumer around it. ``load`` reads
the compacted topics from the beginning to their current end (``callback.topic_reader``,
read_committed, so a configuration published in an aborted transaction is never taken); ``poll``
applies whatever arrived since, without waiting, so a process checks for updates between its own
batches; ``catch_up`` reads to the end right now, for a caller that met an id it does not know
yet. ``ReferenceFollower`` runs the same thing in a daemon thread for processes that have no loop
of their own to poll from (the web API, the AMI producer, the originator).

The consumer never commits and uses a throwaway group: every start rebuilds the whole view, which
is what a compacted topic is for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaException, Message

from callback.kafka_io import is_record
from callback.reference import ReferenceData
from callback.topic_reader import read_to_end, state_consumer, whole_topics
from schemas.topics import CONFIG_CARDS, CONFIG_SETTINGS, CONFIG_TARIFFS, CONFIG_TOPICS, CONFIG_USERS

log = logging.getLogger(__name__)

#: every config topic of the catalogue: what a feed reads unless told otherwise
CONFIG_TOPIC_NAMES: tuple[str, ...] = tuple(t.name for t in CONFIG_TOPICS)
#: what rating looks up (tariffs, users, cards, settings); the rater reads only these at start-up
RATING_TOPICS: tuple[str, ...] = (
    CONFIG_TARIFFS.name,
    CONFIG_USERS.name,
    CONFIG_CARDS.name,
    CONFIG_SETTINGS.name,
)


class ReferenceFeed:
    """A ``ReferenceData`` (``data``) fed from ``topics``: ``load`` once, then ``poll`` or ``catch_up``.

    ``topics`` may name ``accounts.balances`` as well as config topics. ``aliases`` maps topics
    read under another name (a benchmark's own copies) to the catalogue topic whose records they
    hold, so the fold files them correctly."""

    def __init__(
        self,
        topics: Iterable[str] = CONFIG_TOPIC_NAMES,
        aliases: dict[str, str] | None = None,
        *,
        purpose: str = "reference",
    ) -> None:
        self.data = ReferenceData()
        self._topics = tuple(topics)
        self._aliases = dict(aliases or {})
        self._consumer: Consumer = state_consumer(purpose)

    def load(self, timeout_s: float = 120.0) -> ReferenceData:
        """Read every topic from the beginning to its current end; raises ``TimeoutError`` if that
        takes longer than ``timeout_s`` and ``KafkaException`` if a topic does not exist."""
        n = read_to_end(
            self._consumer, whole_topics(self._consumer, self._topics), self._on_message, timeout_s
        )
        log.info(
            "reference data loaded from %s: %d records (%s), %d rejected",
            ", ".join(self._topics),
            n,
            self.data.summary(),
            self.data.rejected,
        )
        return self.data

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply whatever records arrived since the last call (waiting at most ``timeout_s`` for
        the first one; by default not at all); returns how many were applied."""
        # consume() waits out its whole timeout unless the batch fills, which held every update
        # back by up to timeout_s: wait for one record only, then take what else is already there
        batch = self._consumer.consume(num_messages=1, timeout=timeout_s)
        if batch:
            batch += self._consumer.consume(num_messages=1000, timeout=0)
        applied = 0
        for msg in batch:
            if not is_record(msg, "reference feed"):
                continue
            self._on_message(msg)
            applied += 1
            log.info("reference update %s[%s]", msg.topic(), msg.key())
        return applied

    def catch_up(self, timeout_s: float = 30.0) -> int:
        """Read the topics to their current end now, instead of at the next ``poll``.

        The rater calls this when a leg names a payer, tariff or prefix it does not know: the
        reference record was committed before the leg was produced, so it is on the topic, only
        perhaps not fetched yet by this separate consumer."""
        assignment = self._consumer.assignment()
        if not assignment:
            return 0
        positions = self._consumer.position(assignment)
        return read_to_end(self._consumer, positions, self._on_message, timeout_s)

    def _on_message(self, msg: Message) -> None:
        key = msg.key()
        topic = msg.topic()
        self.data.apply(
            self._aliases.get(topic, topic), key.decode(errors="replace") if key else "", msg.value()
        )

    def close(self) -> None:
        self._consumer.close()


class ReferenceFollower:
    """Runs a ``ReferenceFeed`` in a daemon thread: ``load``, then ``poll`` until stopped.

    ``on_change(data)`` runs on that thread after the load and after every poll that applied
    records; it is the only place where the view may be read, since the thread keeps changing it
    (copy what you need into something thread-safe, as the web API's ``UserDirectory`` does).
    A failed load (cluster unreachable, topic not created yet) is retried every ``retry_s``.
    """

    def __init__(
        self,
        feed: ReferenceFeed,
        on_change: Callable[[ReferenceData], object],
        *,
        poll_s: float = 1.0,
        retry_s: float = 5.0,
        name: str = "reference-follower",
    ) -> None:
        self.feed = feed
        self.on_change = on_change
        self.poll_s = poll_s
        self.retry_s = retry_s
        #: set once the topics were read to the end they had at start
        self.loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, wait_s: float = 30.0) -> bool:
        """Start following; True when the topics were read to their end within ``wait_s``."""
        self._thread.start()
        return self.loaded.wait(wait_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.feed.load()
                    break
                except (KafkaException, TimeoutError) as exc:
                    log.error("reference data not loaded (%s); retrying in %.0f s", exc, self.retry_s)
                    self._stop.wait(self.retry_s)
            if self._stop.is_set():
                return
            self.on_change(self.feed.data)
            self.loaded.set()
            while not self._stop.is_set():
                try:
                    applied = self.feed.poll(self.poll_s)
                except KafkaException as exc:
                    log.error("following reference data: %s; retrying in %.0f s", exc, self.retry_s)
                    self._stop.wait(self.retry_s)
                    continue
                if applied:
                    self.on_change(self.feed.data)
        finally:
            self.feed.close()
