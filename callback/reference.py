"""The reference data of the whole pipeline, in memory: one pure fold of the compacted topics.

The eight ``config.*`` topics (and ``accounts.balances``) are compacted and keyed by natural id,
so their current state is simply "the last record per key, unless it is a tombstone". Every
process that needs that state (the rater, the processors, the web API, the AMI producer, the
originator) folds the same records with ``ReferenceData.apply``, one at a time, at start-up while
reading to the end and afterwards while following updates. One fold means one set of rules for
what a tombstone, an invalid record or a replaced device does, instead of one per consumer; and
because it is pure (no Kafka here; ``callback.reference_feed`` reads the topics) it is
unit-tested record by record.

The lookups authentication needs (a device by ANI or PIN, a card by PIN or pinless ANI, a DID
with its dial plan) are indexes kept current on every upsert, replace and delete, so a lookup is
a dict hit and a device that changed its PIN is no longer found by the old one. When two entities
share a number, guessing would charge or authenticate the wrong subscriber, so the unique lookups
answer None for that number (and say so in the log); ``schemas.carrier_config`` refuses such a
file up front, but records published by other tools can still collide.

The web API also folds ``auth.web_credentials`` here (``web_credentials``, by user id); no other
process reads that topic, so for them the table stays empty (docs/architecture.md, "Credentials").

Not thread-safe: one thread applies records; readers in other threads take what they need from a
callback run on that thread (see ``callback.reference_feed.ReferenceFollower``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from rating_stream.engine import CompiledTariff
from schemas.carrier_config import CarrierConfig
from schemas.credentials import WebCredentials
from schemas.rating import BalanceUpdate
from schemas.reference import (
    CallbackDialPlan,
    CallbackServer,
    CallbackSettings,
    CallingCard,
    Device,
    Did,
    Tariff,
    User,
)
from schemas.topics import (
    ACCOUNTS_BALANCES,
    AUTH_WEB_CREDENTIALS,
    CONFIG_CARDS,
    CONFIG_DEVICES,
    CONFIG_DIALPLANS,
    CONFIG_DIDS,
    CONFIG_SERVERS,
    CONFIG_SETTINGS,
    CONFIG_TARIFFS,
    CONFIG_USERS,
)

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def balance_key(update: BalanceUpdate) -> str:
    """The ``accounts.balances`` key of a balance record: ``'<kind>:<id>'``."""
    return f"{update.payer_kind.value}:{update.payer_id}"


#: topic -> (record model, the natural id a record's key must equal)
_TOPICS: dict[str, tuple[type[BaseModel], Callable[[Any], str]]] = {
    CONFIG_SETTINGS.name: (CallbackSettings, lambda s: s.scope),
    CONFIG_USERS.name: (User, lambda u: u.user_id),
    CONFIG_DEVICES.name: (Device, lambda d: d.device_id),
    CONFIG_CARDS.name: (CallingCard, lambda c: c.number),
    CONFIG_TARIFFS.name: (Tariff, lambda t: t.tariff_id),
    CONFIG_DIDS.name: (Did, lambda d: d.number),
    CONFIG_DIALPLANS.name: (CallbackDialPlan, lambda p: p.dialplan_id),
    CONFIG_SERVERS.name: (CallbackServer, lambda s: s.server_id),
    ACCOUNTS_BALANCES.name: (BalanceUpdate, balance_key),
    AUTH_WEB_CREDENTIALS.name: (WebCredentials, lambda c: c.user_id),
}

#: every topic ``ReferenceData.apply`` folds; records of any other topic are ignored
FOLDED_TOPICS: frozenset[str] = frozenset(_TOPICS)


class _Index(Generic[M]):
    """Attribute value -> the entities (by id) that carry it; several may, so all are kept.

    Keeping every holder rather than the last one is what lets a lookup tell "unique" from
    "ambiguous", and lets a delete of one holder leave the other findable.
    """

    __slots__ = ("_by", "_keys_of", "_what", "_warned")

    def __init__(self, what: str, keys_of: Callable[[M], Iterable[str]]) -> None:
        self._what = what
        self._keys_of = keys_of
        self._by: dict[str, dict[str, M]] = {}
        #: ambiguous values already reported: one warning per value, not one per lookup
        self._warned: set[str] = set()

    def add(self, entity_id: str, entity: M) -> None:
        for key in self._keys_of(entity):
            self._by.setdefault(key, {})[entity_id] = entity

    def remove(self, entity_id: str, entity: M) -> None:
        for key in self._keys_of(entity):
            holders = self._by.get(key)
            if holders is None:
                continue
            holders.pop(entity_id, None)
            if len(holders) <= 1:
                self._warned.discard(key)  # unique again: a new collision later deserves a warning
                if not holders:
                    del self._by[key]

    def one(self, key: str) -> M | None:
        """The single entity carrying ``key``; None when none does, or when several do."""
        holders = self._by.get(key)
        if not holders:
            return None
        if len(holders) == 1:
            return next(iter(holders.values()))
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "%s %r is shared by %s: ambiguous, so it identifies nobody until one of them changes",
                self._what,
                key,
                ", ".join(repr(i) for i in sorted(holders)),
            )
        return None

    def all(self, key: str) -> list[M]:
        """Every entity carrying ``key``, ordered by id (so callers decide deterministically)."""
        holders = self._by.get(key)
        if not holders:
            return []
        return [holders[i] for i in sorted(holders)]


def _pin(entity: Device | CallingCard) -> tuple[str, ...]:
    return (entity.pin,) if entity.pin else ()


class ReferenceData:
    """The current value of every reference record, by natural id, with the lookups built on them.

    ``tariffs`` holds compiled tariffs (prefix index and rounding quantum built once when the
    tariff arrives, never per leg); the other tables hold the validated records as they are on
    the topics. Read the tables freely; change them only through ``apply``/``apply_model``, which
    keep the indexes and ``version`` in step.
    """

    def __init__(self) -> None:
        self.tariffs: dict[str, CompiledTariff] = {}
        self.users: dict[str, User] = {}
        self.devices: dict[str, Device] = {}
        #: by card number
        self.cards: dict[str, CallingCard] = {}
        #: by scope: 'system', 'did:<number>', 'dialplan:<id>'
        self.settings: dict[str, CallbackSettings] = {}
        #: by DID number
        self.dids: dict[str, Did] = {}
        self.dialplans: dict[str, CallbackDialPlan] = {}
        self.servers: dict[str, CallbackServer] = {}
        #: latest ``accounts.balances`` record per payer key '<kind>:<id>'
        self.balances: dict[str, BalanceUpdate] = {}
        #: web logins by user id (``auth.web_credentials``: only the web API reads it)
        self.web_credentials: dict[str, WebCredentials] = {}
        #: records that were not valid reference data (logged, skipped: never fatal)
        self.rejected = 0
        #: bumped by every record that changed the view, so callers can cache what they derive
        self.version = 0

        self._device_by_number: _Index[Device] = _Index("registered number", lambda d: d.registered_numbers)
        self._devices_by_pin: _Index[Device] = _Index("device PIN", _pin)
        self._cards_by_pin: _Index[CallingCard] = _Index("card PIN", _pin)
        self._card_by_pinless: _Index[CallingCard] = _Index("pinless number", lambda c: c.pinless_numbers)
        #: topic -> (table, indexes over it); tariffs are stored compiled, see ``_store``
        self._tables: dict[str, tuple[dict[str, Any], tuple[_Index[Any], ...]]] = {
            CONFIG_SETTINGS.name: (self.settings, ()),
            CONFIG_USERS.name: (self.users, ()),
            CONFIG_DEVICES.name: (self.devices, (self._device_by_number, self._devices_by_pin)),
            CONFIG_CARDS.name: (self.cards, (self._cards_by_pin, self._card_by_pinless)),
            CONFIG_TARIFFS.name: (self.tariffs, ()),
            CONFIG_DIDS.name: (self.dids, ()),
            CONFIG_DIALPLANS.name: (self.dialplans, ()),
            CONFIG_SERVERS.name: (self.servers, ()),
            ACCOUNTS_BALANCES.name: (self.balances, ()),
            AUTH_WEB_CREDENTIALS.name: (self.web_credentials, ()),
        }

    @classmethod
    def from_carrier_config(cls, config: CarrierConfig) -> ReferenceData:
        """The view a carrier YAML file describes: what the topics hold once it is published."""
        data = cls()
        for topic, key, record in config.records():
            data.apply_model(topic, key, record)
        return data

    # --- folding -------------------------------------------------------------------------------
    def apply(self, topic: str, key: str, value: bytes | None) -> None:
        """Fold one record as read from Kafka; ``value=None`` is a tombstone (delete ``key``).

        An invalid value is logged with its topic and key, counted in ``rejected`` and skipped:
        the previous value of ``key`` stays, because one bad record from some tool must neither
        stop the caller nor delete a subscriber. A record of a topic this view does not fold is
        ignored."""
        spec = _TOPICS.get(topic)
        if spec is None:
            log.debug("ignoring %s[%s]: not reference data", topic, key)
            return
        if value is None:
            self._delete(topic, key)
            return
        try:
            record = spec[0].model_validate_json(value)
        except ValidationError as exc:
            self._reject(topic, key, str(exc.errors(include_url=False)[:3]))
            return
        self._upsert(topic, key, record)

    def apply_model(self, topic: str, key: str, record: BaseModel | None) -> None:
        """Fold a record that is already a validated model (a carrier YAML file); None deletes.

        A model of the wrong type for ``topic`` is a programming error, not data, so it raises
        ``TypeError`` instead of being counted."""
        spec = _TOPICS.get(topic)
        if spec is None:
            log.debug("ignoring %s[%s]: not reference data", topic, key)
            return
        if record is None:
            self._delete(topic, key)
            return
        if not isinstance(record, spec[0]):
            raise TypeError(f"{topic} holds {spec[0].__name__}, not {type(record).__name__}")
        self._upsert(topic, key, record)

    def _upsert(self, topic: str, key: str, record: BaseModel) -> None:
        natural = _TOPICS[topic][1](record)
        if natural != key:
            # the topic is compacted by key: a record filed under another key would survive a
            # tombstone of its real id and could shadow another entity, so it is not taken
            self._reject(topic, key, f"the key is not the record's id {natural!r}")
            return
        table, indexes = self._tables[topic]
        old = table.get(key)
        for index in indexes:
            if old is not None:
                index.remove(key, old)
            index.add(key, record)
        table[key] = CompiledTariff.build(record) if isinstance(record, Tariff) else record
        self.version += 1

    def _delete(self, topic: str, key: str) -> None:
        table, indexes = self._tables[topic]
        old = table.pop(key, None)
        if old is None:
            return  # nothing to forget: the view did not change
        for index in indexes:
            index.remove(key, old)
        self.version += 1

    def _reject(self, topic: str, key: str, why: str) -> None:
        self.rejected += 1
        log.error("ignoring invalid %s record %r (the previous value stays): %s", topic, key, why)

    # --- lookups -------------------------------------------------------------------------------
    def device_by_number(self, number: str) -> Device | None:
        """The device whose registered numbers include ``number`` (Callback with ANI); None when no
        device, or more than one, has registered it."""
        return self._device_by_number.one(number)

    def devices_by_pin(self, pin: str) -> list[Device]:
        """Devices with this PIN, ordered by device id."""
        return self._devices_by_pin.all(pin)

    def card(self, number: str) -> CallingCard | None:
        return self.cards.get(number)

    def cards_by_pin(self, pin: str) -> list[CallingCard]:
        """Calling cards with this PIN, ordered by card number."""
        return self._cards_by_pin.all(pin)

    def card_by_pinless(self, number: str) -> CallingCard | None:
        """The card whose pinless numbers include ``number``; None when no card, or more than one,
        lists it."""
        return self._card_by_pinless.one(number)

    def did_and_dialplan(self, number: str) -> tuple[Did | None, CallbackDialPlan | None]:
        """The access number ``number`` and its dial plan (None when that plan is not known)."""
        did = self.dids.get(number)
        if did is None:
            return None, None
        return did, self.dialplans.get(did.dialplan_id)

    def access_numbers(self, pbx_id: str) -> frozenset[str]:
        """The DIDs that are access numbers on PBX ``pbx_id``: pinned to it, or not pinned to any."""
        return frozenset(number for number, did in self.dids.items() if did.pbx_id in (None, pbx_id))

    def system_settings(self) -> CallbackSettings | None:
        return self.settings.get("system")

    def balance(self, key: str) -> BalanceUpdate | None:
        """The latest ``accounts.balances`` record of payer ``key`` ('<kind>:<id>')."""
        return self.balances.get(key)

    def summary(self) -> str:
        """How many records of each kind the view holds, for start-up logs."""
        counts = {topic.removeprefix("config."): len(table) for topic, (table, _) in self._tables.items()}
        return ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "empty"
