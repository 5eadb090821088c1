"""Reference data the rater needs (tariffs, users, calling cards, callback settings), in memory.

The compacted ``config.*`` topics are the source of truth; ``ReferenceData.apply`` folds one
record into the in-memory view (a tombstone deletes), so the same code serves the initial read
to the end and the live updates that follow while the rater runs. Tariffs are compiled (prefix
index, rounding quantum) when they arrive, never per leg.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message
from pydantic import ValidationError

from rating_stream.engine import CompiledTariff
from rating_stream.replay import read_to_end, state_consumer, whole_topics
from schemas.reference import CallbackSettings, CallingCard, Tariff, User
from schemas.topics import CONFIG_CARDS, CONFIG_SETTINGS, CONFIG_TARIFFS, CONFIG_USERS

log = logging.getLogger(__name__)

REFERENCE_TOPICS = (CONFIG_TARIFFS.name, CONFIG_USERS.name, CONFIG_CARDS.name, CONFIG_SETTINGS.name)


@dataclass
class ReferenceData:
    """What rating looks up: compiled tariffs, users, cards and settings by their natural ids."""

    tariffs: dict[str, CompiledTariff] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    cards: dict[str, CallingCard] = field(default_factory=dict)
    settings: dict[str, CallbackSettings] = field(default_factory=dict)
    #: records that were not valid reference data (logged, skipped: never fatal)
    rejected: int = 0

    def add_tariff(self, tariff: Tariff) -> None:
        self.tariffs[tariff.tariff_id] = CompiledTariff.build(tariff)

    def apply(self, topic: str, key: str, value: bytes | None) -> None:
        """Fold one config record into the view; ``value=None`` is a tombstone (delete)."""
        try:
            if topic == CONFIG_TARIFFS.name:
                if value is None:
                    self.tariffs.pop(key, None)
                else:
                    self.add_tariff(Tariff.model_validate_json(value))
            elif topic == CONFIG_USERS.name:
                _put(self.users, key, value, User)
            elif topic == CONFIG_CARDS.name:
                _put(self.cards, key, value, CallingCard)
            elif topic == CONFIG_SETTINGS.name:
                _put(self.settings, key, value, CallbackSettings)
        except ValidationError as exc:
            self.rejected += 1
            log.error("ignoring invalid %s record %r: %s", topic, key, exc.errors()[:3])

    def on_message(self, msg: Message) -> None:
        key = msg.key()
        self.apply(msg.topic(), key.decode() if key else "", msg.value())


def _put(table: dict, key: str, value: bytes | None, model: type) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = model.model_validate_json(value)


class ReferenceFeed:
    """Keeps a ``ReferenceData`` current from the config topics: read to end, then poll updates.

    ``aliases`` maps topics read under another name (a benchmark's own copies) to the catalogue
    topic whose records they hold."""

    def __init__(
        self, topics: tuple[str, ...] = REFERENCE_TOPICS, aliases: dict[str, str] | None = None
    ) -> None:
        self.data = ReferenceData()
        self._topics = topics
        self._aliases = aliases or {}
        self._consumer: Consumer = state_consumer("rater-reference")

    def load(self, timeout_s: float = 120.0) -> ReferenceData:
        n = read_to_end(
            self._consumer, whole_topics(self._consumer, self._topics), self._on_message, timeout_s
        )
        log.info(
            "reference data loaded: %d records, %d tariffs, %d users, %d cards",
            n,
            len(self.data.tariffs),
            len(self.data.users),
            len(self.data.cards),
        )
        return self.data

    def poll(self) -> int:
        """Apply whatever config changes arrived since the last call, without waiting."""
        msgs = self._consumer.consume(num_messages=1000, timeout=0)
        for msg in msgs:
            if msg.error() is None:
                self._on_message(msg)
                log.info("reference update %s[%s]", msg.topic(), msg.key())
        return len(msgs)

    def catch_up(self, timeout_s: float = 30.0) -> int:
        """Read the config topics to their current end now, instead of at the next ``poll``.

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
        self.data.apply(self._aliases.get(topic, topic), key.decode() if key else "", msg.value())

    def close(self) -> None:
        self._consumer.close()
