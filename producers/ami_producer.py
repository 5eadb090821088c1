"""``callback producer --pbx NAME``: one PBX's AMI events -> ``pbx.events`` / ``callback.requests``.

The live path around the pure ``Translator``: a panoramisk ``Manager`` logs in and receives every
event; each event is translated at once (read time = now, unless the PBX sends ``Timestamp``),
duplicates (same PBX, Uniqueid, event identity) are dropped by a bounded LRU, bad input goes to
``dlq.pbx.events`` with the reason and the original event, and everything else enters the bounded
``Outbox`` which delivers to Kafka and survives broker outages.

AMI reconnection: panoramisk reconnects by itself after a lost connection or an Asterisk
``Shutdown``; ``BackoffManager`` makes the wait grow (1, 2, 4 ... 30 s) while the PBX stays away and
resets it on login, so a restarting PBX is not hammered and a flapping link recovers fast. Events
Asterisk emits while no session is connected are not replayed by AMI: the log says when the gap
started and ended so an operator can reconcile (CDRs on the PBX side).

Malformed AMI messages: panoramisk's protocol raises on a message that repeats a header it reads as
one string (two ``Event:`` lines, two ``ActionID:``), and an exception out of ``data_received`` makes
asyncio close the connection: the other events of the same read are lost and the producer
reconnects. ``GuardedAmiProtocol`` parses and handles each message on its own; a malformed one (a
header that must be single repeated, neither ``Event`` nor ``Response``, or one whose handling
raises) goes to ``dlq.pbx.events`` with its raw text (``error_kind`` ``malformed_ami``), and the
messages around it are handled as usual on the same connection.

Access numbers come from ``config.dids`` (read at start, then followed), the ``--config`` YAML, or
``--dids`` (tests). Only DIDs pinned to this PBX, or not pinned at all, count.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from producers.ami_fields import header
from producers.ami_translate import Publish, Reject, Translator
from producers.dedup import RecentKeys
from producers.kafka_out import Publisher
from producers.metrics import (
    AMI_BUFFER_OVERFLOW,
    AMI_BUFFERED,
    AMI_CONNECTED,
    AMI_DUPLICATES_DROPPED,
    AMI_EVENTS_IGNORED,
    AMI_EVENTS_READ,
    AMI_RECONNECTS,
    AMI_RECORDS_PUBLISHED,
    AMI_REJECTED,
)
from producers.outbox import Outbox, Pending
from producers.reference_data import AmiEndpoint
from schemas.envelope import DeadLetter
from schemas.topics import PBX_EVENTS, dead_letter_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProducerOptions:
    endpoint: AmiEndpoint
    dids_override: frozenset[str] | None = None
    config_file: Path | None = None
    buffer_size: int = 100_000
    metrics_port: int = 0
    dedup_capacity: int = 100_000
    backoff_max_s: float = 30.0
    drain_timeout_s: float = 30.0


EOL = "\r\n"
BANNER = "Asterisk Call Manager/"
#: headers an AMI message carries at most once: panoramisk reads the first four as one string (a
#: repeat makes it raise), and a channel is identified by the other two; which one is meant when a
#: message has two cannot be guessed
SINGLE_HEADERS = ("event", "response", "actionid", "commandid", "uniqueid", "linkedid")
_HAS_BODY = ("Response: Follows", "Response: Fail")
#: (raw text of the message, what is wrong with it)
OnMalformed = Callable[[str, str], None]


def malformed_reason(block: str) -> str | None:
    """What makes one AMI message (its text between blank lines) unusable, or None when it is fine."""
    lines = block.split(EOL)
    if lines[0].startswith(_HAS_BODY):
        lines = lines[:-1]  # the last line is a command's output, not a header
    counts: dict[str, int] = {}
    for line in lines:
        name, sep, _value = line.partition(": ")
        if sep and name.lower() in SINGLE_HEADERS:
            counts[name.lower()] = counts.get(name.lower(), 0) + 1
    repeated = [name for name in SINGLE_HEADERS if counts.get(name, 0) > 1]
    if repeated:
        return "repeated header " + ", ".join(f"{name!r} ({counts[name]} times)" for name in repeated)
    if not counts.get("event") and not counts.get("response"):
        return "neither an Event nor a Response header"
    return None


class GuardedAmiProtocol(AMIProtocol):
    """panoramisk's AMI protocol with every message parsed and handled on its own.

    Same framing as panoramisk (messages end with a blank line; the banner precedes the first), but a
    malformed message is handed to the manager's ``on_malformed(raw, reason)`` instead of raising out
    of ``data_received`` (which closes the connection and drops the rest of the read). Bytes are
    decoded incrementally, so a character split between two reads is not lost."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._decoder: tuple[str, codecs.IncrementalDecoder] | None = None

    def data_received(self, data: bytes) -> None:
        encoding = getattr(self, "encoding", "ascii")  # the manager sets it once connected
        if self._decoder is None or self._decoder[0] != encoding:
            self._decoder = (encoding, codecs.getincrementaldecoder(encoding)("ignore"))
        text = self._decoder[1].decode(data)
        if self.version is None and text.startswith(BANNER):
            self.version = text.partition(EOL)[0].partition("/")[2].strip()
            self.log.info("protocol version: '%s'", self.version)
        if self.queue:
            text = self.queue.popleft() + text
        blocks = text.split(EOL + EOL)
        self.queue.append(blocks.pop(-1))
        for block in blocks:
            self.handle_block(block.strip())

    def handle_block(self, block: str) -> None:
        if block.startswith(BANNER):
            block = block.partition(EOL)[2].strip()
        if not block:
            return
        reason = malformed_reason(block)
        message = Message.from_line(block) if reason is None else None
        if message is None:
            self._malformed(block, reason or "no header panoramisk can read")
            return
        try:
            self.handle_message(message)
        except Exception as exc:  # a message panoramisk cannot handle must not cost the connection
            self.log.exception("handling an AMI message failed")
            self._malformed(block, f"handling it failed: {type(exc).__name__}: {exc}")

    def _malformed(self, block: str, reason: str) -> None:
        report: OnMalformed | None = getattr(self.factory, "on_malformed", None)
        if report is None:
            self.log.warning("malformed AMI message dropped (%s): %r", reason, block[:500])
        else:
            report(block, reason)


class BackoffManager(Manager):
    """panoramisk Manager whose reconnect delay doubles while the PBX is away, reset by a login.

    Its connections use ``GuardedAmiProtocol``: ``on_malformed(raw, reason)`` receives every
    malformed message (None: logged and dropped)."""

    def __init__(
        self,
        *,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 30.0,
        on_malformed: OnMalformed | None = None,
        **config: Any,
    ) -> None:
        config.setdefault("protocol_factory", GuardedAmiProtocol)
        super().__init__(reconnect_timeout=1, **config)
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.reconnect_timeout = backoff_min_s
        self.on_malformed = on_malformed

    def connect(self, *args: Any, **kwargs: Any) -> Any:
        task = super().connect(*args, **kwargs)
        # the delay before the *next* attempt, should this one fail or the connection drop again
        self.reconnect_timeout = min(self.backoff_max_s, self.reconnect_timeout * 2)
        return task

    def reset_backoff(self) -> None:
        self.reconnect_timeout = self.backoff_min_s


class AmiProducer:
    """Translate, deduplicate, buffer. I/O is the Manager (in) and the Outbox's publisher (out)."""

    def __init__(self, options: ProducerOptions, publisher: Publisher, dids: frozenset[str]) -> None:
        self.options = options
        self.pbx_id = options.endpoint.pbx_id
        self.translator = Translator(pbx_id=self.pbx_id, dids=dids)
        self.recent = RecentKeys(options.dedup_capacity)
        self.outbox = Outbox(
            publisher,
            capacity=options.buffer_size,
            on_delivered=self._delivered,
            on_overflow=lambda _item: AMI_BUFFER_OVERFLOW.labels(self.pbx_id).inc(),
        )
        self.manager: BackoffManager | None = None
        self.logged_in = asyncio.Event()
        self.logins = 0
        self._disconnected_at: float | None = None

    # --- events in -----------------------------------------------------------------------------------

    def on_event(self, _manager: Manager, event: Any) -> None:
        """Every AMI event (panoramisk callback). Never raises: a bad event is dead-lettered."""
        name = header(event, "Event") or "?"
        AMI_EVENTS_READ.labels(self.pbx_id).inc()
        headers = {k: v for k, v in event.items()}
        try:
            outcomes = self.translator.translate(headers, datetime.now(UTC))
        except Exception as exc:  # a translator bug must not lose the event or stop the stream
            log.exception("translating %s failed", name)
            outcomes = [Reject(f"{name}: translator error {type(exc).__name__}: {exc}", "translator_error")]
        if not outcomes:
            AMI_EVENTS_IGNORED.labels(self.pbx_id, name).inc()
            return
        for outcome in outcomes:
            if isinstance(outcome, Reject):
                self._reject(outcome, headers)
            elif outcome.dedup_key is not None and outcome.dedup_key in self.recent:
                AMI_DUPLICATES_DROPPED.labels(self.pbx_id).inc()
                log.info(
                    "duplicate %s for %s dropped (already published)", outcome.value.type, outcome.dedup_key
                )
            else:
                self._enqueue(outcome)

    def _enqueue(self, outcome: Publish) -> None:
        what = f"{outcome.value.type} {outcome.value.event_id}"
        if self.outbox.put(Pending(outcome.topic, outcome.key, outcome.value.to_bytes(), what)):
            if outcome.dedup_key is not None:  # only what is kept counts as published-to-be
                self.recent.add(outcome.dedup_key)
        AMI_BUFFERED.labels(self.pbx_id).set(len(self.outbox))

    def _reject(self, reject: Reject, headers: dict[str, Any]) -> None:
        AMI_REJECTED.labels(self.pbx_id, reject.error_kind).inc()
        log.warning("AMI event from %s dead-lettered: %s", self.pbx_id, reject.reason)
        raw = json.dumps(headers, sort_keys=True, default=str).encode()
        letter = DeadLetter(
            source=f"ami/{self.pbx_id}",
            source_topic=PBX_EVENTS.name,
            reason=reject.reason,
            error_kind=reject.error_kind,
            value_b64=_b64(raw),
            details={"pbx_id": self.pbx_id, "event": header(headers, "Event")},
        )
        key = header(headers, "Linkedid") or header(headers, "Uniqueid") or self.pbx_id
        self.outbox.put(
            Pending(dead_letter_topic(PBX_EVENTS.name), key, letter.to_bytes(), f"dlq {reject.reason}")
        )

    def on_malformed(self, raw: str, reason: str) -> None:
        """A message the PBX sent that is not valid AMI: dead-lettered with its raw text."""
        AMI_EVENTS_READ.labels(self.pbx_id).inc()
        AMI_REJECTED.labels(self.pbx_id, "malformed_ami").inc()
        log.warning("malformed AMI message from %s dead-lettered: %s", self.pbx_id, reason)
        fields: dict[str, list[str]] = {}
        for line in raw.split(EOL):
            name, sep, value = line.partition(": ")
            if sep:
                fields.setdefault(name.lower(), []).append(value.strip())

        def single(name: str) -> str | None:
            values = fields.get(name, [])
            return values[0] if len(values) == 1 and values[0] else None

        letter = DeadLetter(
            source=f"ami/{self.pbx_id}",
            source_topic=PBX_EVENTS.name,
            reason=f"malformed AMI message: {reason}",
            error_kind="malformed_ami",
            value_b64=_b64(raw.encode()),
            details={"pbx_id": self.pbx_id, "event": fields.get("event", []), "raw": raw[:2000]},
        )
        key = single("linkedid") or single("uniqueid") or self.pbx_id
        self.outbox.put(
            Pending(
                dead_letter_topic(PBX_EVENTS.name), key, letter.to_bytes(), f"dlq malformed AMI ({reason})"
            )
        )
        AMI_BUFFERED.labels(self.pbx_id).set(len(self.outbox))

    def _delivered(self, item: Pending) -> None:
        AMI_RECORDS_PUBLISHED.labels(self.pbx_id, item.topic).inc()
        AMI_BUFFERED.labels(self.pbx_id).set(len(self.outbox))

    # --- connection ----------------------------------------------------------------------------------

    def connect(self) -> BackoffManager:
        ep = self.options.endpoint
        manager = BackoffManager(
            loop=asyncio.get_running_loop(),
            host=ep.host,
            port=ep.port,
            username=ep.username,
            secret=ep.secret,
            events="on",
            ping_delay=5,
            ping_interval=5,
            backoff_max_s=self.options.backoff_max_s,
            on_malformed=self.on_malformed,
            on_login=self._on_login,
            on_disconnect=self._on_disconnect,
            log=logging.getLogger(f"ami.{self.pbx_id}"),
        )
        manager.register_event("*", self.on_event)
        self.manager = manager
        log.info("connecting to PBX %s", ep)
        manager.connect()
        return manager

    def _on_login(self, manager: Manager) -> None:
        if not manager.authenticated:
            log.error("PBX %s refused the AMI login (check manager.conf user/secret)", self.pbx_id)
            return
        self.logins += 1
        if isinstance(manager, BackoffManager):
            manager.reset_backoff()
        AMI_CONNECTED.labels(self.pbx_id).set(1)
        AMI_RECONNECTS.labels(self.pbx_id).inc()
        if self._disconnected_at is not None:
            log.warning(
                "PBX %s: logged in again after %.1f s without AMI; events of that gap are not "
                "replayed by Asterisk",
                self.pbx_id,
                time.monotonic() - self._disconnected_at,
            )
            self._disconnected_at = None
        else:
            log.info("PBX %s: logged in", self.pbx_id)
        self.logged_in.set()

    def _on_disconnect(self, manager: Manager, exc: Any) -> None:
        AMI_CONNECTED.labels(self.pbx_id).set(0)
        self.logged_in.clear()
        if self._disconnected_at is None:
            self._disconnected_at = time.monotonic()
        wait = manager.reconnect_timeout if isinstance(manager, BackoffManager) else 2
        log.error(
            "PBX %s: AMI connection lost (%s); reconnecting in %.0f s", self.pbx_id, exc or "closed", wait
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop``; then drain the buffer (bounded wait) and report what could not be sent."""
        self.connect()
        sender = asyncio.ensure_future(self.outbox.run(stop))
        await stop.wait()
        if self.manager is not None:
            self.manager.close()
            self.manager.connection_lost = lambda exc: None  # type: ignore[method-assign]  # no reconnect
        try:
            await asyncio.wait_for(sender, self.options.drain_timeout_s)
        except TimeoutError:
            lost = self.outbox.abandon()
            log.error("stopped with %d record(s) not delivered to Kafka (logged above)", lost)
            return 1
        return 0


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def _listed(numbers: frozenset[str]) -> str:
    return ", ".join(sorted(numbers)[:20]) or "none"


async def _run(options: ProducerOptions) -> int:
    from callback.reference import ReferenceData
    from producers.kafka_out import KafkaPublisher

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    publisher = KafkaPublisher(f"callback-ami-{options.endpoint.pbx_id}")
    follower = None
    pbx_id = options.endpoint.pbx_id
    if options.dids_override is not None:
        dids = options.dids_override
    elif options.config_file is not None:
        from producers.reference_data import load_config

        dids = ReferenceData.from_carrier_config(load_config(options.config_file)).access_numbers(pbx_id)
    else:
        dids = frozenset()
    producer = AmiProducer(options, publisher, dids)
    if options.dids_override is None and options.config_file is None:
        from callback.reference_feed import ReferenceFeed, ReferenceFollower
        from schemas.topics import CONFIG_DIDS

        def on_change(data: ReferenceData) -> None:
            # on the follower's thread: hand the loop a frozen copy, never the changing fold
            numbers = data.access_numbers(pbx_id)
            if follower is not None and follower.loaded.is_set() and numbers != producer.translator.dids:
                log.info("access numbers of PBX %s changed to %d: %s", pbx_id, len(numbers), _listed(numbers))
            loop.call_soon_threadsafe(producer.translator.set_dids, numbers)

        follower = ReferenceFollower(
            ReferenceFeed((CONFIG_DIDS.name,), purpose=f"producer-{pbx_id}"), on_change, name="producer-dids"
        )
        await loop.run_in_executor(None, follower.start)
    log.info(
        "PBX %s: %d access number(s): %s",
        options.endpoint.pbx_id,
        len(producer.translator.dids),
        _listed(producer.translator.dids),
    )
    try:
        return await producer.run(stop)
    finally:
        if follower is not None:
            follower.stop()
        publisher.close()


def run_producer(options: ProducerOptions) -> int:
    if options.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(options.metrics_port, addr="127.0.0.1")
    return asyncio.run(_run(options))
