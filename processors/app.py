"""``callback processors``: the Faust application that runs callback sessions.

Thin on purpose: the agents decode a record, call the pure layer and send what it returns.

* **sessions agent** (``callback.requests`` + ``pbx.events`` + ``callback.control``, co-partitioned
  by callback id): ``processors.apply.apply_input`` on the ``sessions`` table, then the outputs;
* **guard agent** (``callback.admission``, one partition): ``processors.guard.admit`` / ``release``
  on the ``guard`` table, verdicts back to ``callback.control``;
* **timer loop** (every ``tick_interval_s``) and **sweep** (every ``sweep_interval_s``): due timers
  of this worker's sessions become ticks on ``callback.control`` (``processors.timers``);
* **reference feed**: the shared fold of the ``config.*`` topics and ``accounts.balances``, read to
  the end before the first input is processed, then followed (changes apply without a restart).

Guarantees (docs/processors.md): Faust runs ``at_least_once``; the table write that applies an
input also stores its outputs, which are sent after it, so a crash at any point either replays the
input or re-sends its outputs with the same ids, and the consumers drop what they already have.
A record that does not decode, or that makes a step fail, goes to ``dlq.<topic>`` with the reason;
the stream goes on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import Consumer, Producer, TopicPartition
from faust.exceptions import ConsistencyError
from faust.types import TP
from faust.types.tuples import Message as FaustMessage

from callback.kafka_io import consumer_config, producer_config
from callback.reference_feed import CONFIG_TOPIC_NAMES, ReferenceFeed
from callback.settings import KafkaSettings, Settings
from processors import metrics
from processors.apply import InputRecord, apply_input
from processors.codecs import KEY_CODEC, InvalidRecord, codec_name, decode, register_codecs
from processors.guard import GuardEntry, admit, did_key, forgettable, number_key, release
from processors.session import REFERENCE_MISSES, World
from processors.state import Session
from processors.timers import Due, TimerWheel
from schemas.callback import CallbackInitiation
from schemas.control import AdmissionRequest, AdmissionVerdict, SessionReleased
from schemas.envelope import DeadLetter
from schemas.topics import (
    ACCOUNTS_BALANCES,
    CALLBACK_ADMISSION,
    CALLBACK_CONTROL,
    CALLBACK_REQUESTS,
    GUARD_CHANGELOG,
    PBX_EVENTS,
    PROCESSORS_APP_ID,
    SESSIONS_CHANGELOG,
    dead_letter_topic,
)

log = logging.getLogger(__name__)

SESSION_INPUTS = (CALLBACK_REQUESTS.name, PBX_EVENTS.name, CALLBACK_CONTROL.name)
#: the tables live on local disk (``datadir``, RocksDB): a restart reads the changelog only past what
#: the disk holds, where the memory store replays all of it (minutes for an hour of traffic)
TABLE_STORE = "rocksdb://"
#: a reference miss makes the agent read the config topics to their end at most this often
CATCH_UP_EVERY_S = 1.0


def broker_urls(kafka: KafkaSettings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",") if server.strip()]


def broker_credentials(kafka: KafkaSettings) -> faust.auth.Credentials | None:
    """Faust's credentials from the librdkafka-style settings every other client uses
    (``security_protocol`` and ``extra``: ``sasl.mechanism``, ``sasl.username``, ``sasl.password``,
    ``ssl.ca.location``, ``ssl.certificate.location``, ``ssl.key.location``, ``ssl.key.password``)."""
    protocol = kafka.security_protocol.upper()
    extra = kafka.extra
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=extra.get("ssl.ca.location"))
        if extra.get("ssl.certificate.location"):
            context.load_cert_chain(
                extra["ssl.certificate.location"],
                extra.get("ssl.key.location"),
                extra.get("ssl.key.password"),
            )
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=extra.get("sasl.username"),
            password=extra.get("sasl.password"),
            mechanism=extra.get("sasl.mechanism", "PLAIN"),
            ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    raise ValueError(f"kafka.security_protocol {kafka.security_protocol!r} is not one Faust supports")


class Processors:
    """The Faust app with its topics, tables, agents, timers and reference data."""

    def __init__(self, settings: Settings) -> None:
        register_codecs()
        self.settings = settings
        conf = settings.processors
        self.source = f"processors/{conf.instance}"
        self.app = faust.App(
            PROCESSORS_APP_ID,
            broker=broker_urls(settings.kafka),
            broker_credentials=broker_credentials(settings.kafka),
            processing_guarantee="at_least_once",
            # topics come from the catalogue (`callback topics apply`), never from Faust's guesses
            topic_allow_declare=False,
            topic_disable_leader=True,
            store=TABLE_STORE,
            datadir=str(conf.data_dir / conf.instance),
            web_port=conf.web_port,
            web_bind="127.0.0.1",
            web_host="127.0.0.1",
            # Faust identifies a member by this URL in its assignments, and a static member that
            # restarts gets its last assignment back from the broker: an URL that changed with the
            # web port would fail Faust's own check and stop the worker. Stable per instance.
            canonical_url=f"http://{conf.instance}.{PROCESSORS_APP_ID}.invalid",
            broker_session_timeout=conf.session_timeout_s,
            broker_heartbeat_interval=conf.heartbeat_interval_s,
            broker_commit_interval=conf.commit_interval_s,
            consumer_group_instance_id=f"{PROCESSORS_APP_ID}-{conf.instance}",
            table_standby_replicas=conf.standby_replicas,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            stream_recovery_delay=0.5,
            autodiscover=False,
        )
        app = self.app
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.inputs = app.topic(*SESSION_INPUTS, **raw)
        self.admission_in = app.topic(CALLBACK_ADMISSION.name, **raw)
        self.sessions = self._table("sessions", SESSIONS_CHANGELOG.name, SESSIONS_CHANGELOG.partitions)
        self.sessions.on_recover(self._rebuild_timers)
        self.guard = self._table("guard", GUARD_CHANGELOG.name, GUARD_CHANGELOG.partitions)
        self.feed = ReferenceFeed((*CONFIG_TOPIC_NAMES, ACCOUNTS_BALANCES.name), purpose="processors")
        self.world = World(self.feed.data, conf.timeouts, self.source)
        self.reference_ready = asyncio.Event()
        self._feed_lock = asyncio.Lock()
        self._last_catch_up = 0.0
        self._guard_pruned_at: datetime | None = None
        #: the next offset the stream should deliver, per input partition (to see what Faust skipped)
        self._next_offset: dict[tuple[str, int], int] = {}
        #: where the last tick sent for a session landed (None: its send failed)
        self._tick_at: dict[str, tuple[int, int] | None] = {}
        self.wheel = TimerWheel(
            resend_after_s=max(2.0, conf.sweep_interval_s * 2), max_in_flight=conf.max_ticks_in_flight
        )
        self.ticks = Producer(producer_config(**{"client.id": f"{self.source}-ticks", "linger.ms": 1}))

        app.agent(self.inputs, name="sessions")(self._sessions_agent)
        app.agent(self.admission_in, name="guard")(self._guard_agent)
        app.task(self._follow_reference)
        app.timer(conf.tick_interval_s)(self._fire_due_timers)
        app.timer(conf.sweep_interval_s)(self._sweep)

    def _table(self, name: str, changelog: str, partitions: int) -> Any:
        """A table whose changelog is the catalogued topic, its values our pydantic contract."""
        serializers = {"key_serializer": KEY_CODEC, "value_serializer": codec_name(changelog)}
        table = self.app.Table(
            name,
            partitions=partitions,
            changelog_topic=self.app.topic(
                changelog, partitions=partitions, compacting=True, deleting=False, **serializers
            ),
        )
        # Faust derives a table's serializers from faust.Record types; ours are pydantic models
        table.key_serializer, table.value_serializer = KEY_CODEC, codec_name(changelog)
        return table

    # --- outputs ---------------------------------------------------------------------------------------
    async def _send(self, topic: str, key: str, value: bytes) -> None:
        """Hand a record to Faust's producer (keyed: aiokafka's partitioner). Not awaited until
        delivered: Faust flushes this producer before it commits an offset, and the outbox covers
        the time in between."""
        await self.app.producer.send(topic, key.encode(), value, None, None, None)

    async def _dead_letter(self, event: Any, reason: str, kind: str, **details: Any) -> None:
        msg = event.message
        metrics.DEAD_LETTERS.labels(msg.topic, kind).inc()
        letter = DeadLetter(
            source=self.source,
            source_topic=msg.topic,
            source_partition=msg.partition,
            source_offset=msg.offset,
            key_b64=base64.b64encode(msg.key).decode() if msg.key is not None else None,
            value_b64=base64.b64encode(msg.value).decode() if msg.value is not None else None,
            reason=reason,
            error_kind=kind,
            details=details,
        )
        log.warning("dead-lettered %s[%d]@%d: %s (%s)", msg.topic, msg.partition, msg.offset, reason, kind)
        await self._send(dead_letter_topic(msg.topic), msg.key.decode(errors="replace") if msg.key else "",
                         letter.to_bytes())

    # --- reference data --------------------------------------------------------------------------------
    async def _follow_reference(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self.feed.load)
                break
            except Exception as exc:  # Kafka not reachable yet: keep trying, never exit
                log.error("reading the reference data failed (%s); retrying in 5 s", exc)
                await asyncio.sleep(5)
        log.info("reference data loaded: %s", self.feed.data.summary())
        self.reference_ready.set()
        while True:
            await asyncio.sleep(0.25)
            async with self._feed_lock:
                try:
                    self.feed.poll()
                except Exception as exc:
                    log.warning("following the reference data: %s", exc)

    async def _catch_up(self) -> bool:
        """Read the reference topics to their end now (after a miss); at most once a second."""
        if time.monotonic() - self._last_catch_up < CATCH_UP_EVERY_S:
            return False
        self._last_catch_up = time.monotonic()
        async with self._feed_lock:
            try:
                n = await asyncio.get_running_loop().run_in_executor(None, self.feed.catch_up, 5.0)
            except Exception as exc:
                log.warning("catching up on the reference data: %s", exc)
                return False
        return n > 0

    # --- the sessions agent -----------------------------------------------------------------------------
    async def _sessions_agent(self, stream: Any) -> None:
        await self.reference_ready.wait()
        await self._each(stream, self._on_session_input)

    async def _each(self, stream: Any, handle: Any) -> None:
        """``handle`` every event of ``stream``, and every record Faust skipped before it; one that
        fails is dead-lettered and the stream goes on: a bug must cost one record, never the stage."""
        async for event in stream.events():
            for missed in await self._skipped_before(event.message):
                await self._handle_one(handle, missed)
                self.app.consumer.ack(missed.message)
            await self._handle_one(handle, event)

    async def _handle_one(self, handle: Any, event: Any) -> None:
        try:
            await handle(event)
        except Exception as exc:
            msg = event.message
            log.exception("input %s[%d]@%d failed", msg.topic, msg.partition, msg.offset)
            await self._dead_letter(event, f"processing failed: {type(exc).__name__}: {exc}", "handler_error")

    async def _skipped_before(self, msg: Any) -> list[Any]:
        """Records of ``msg``'s partition that Faust never delivered, read again from Kafka.

        Faust's fetcher drops a record it was handing to the stream when the flow is suspended at
        that moment (a rebalance or recovery starting): it moves on as if the record had been
        delivered, so the record is lost to this process, and the offset commit stalls before it.
        Our input topics are plain (no transaction markers, no compaction), so a jump in offsets
        within a partition is such a drop: the records in between are read with a consumer of our
        own and handled first, in order, then acknowledged to Faust."""
        tp = (msg.topic, msg.partition)
        expected = self._next_offset.get(tp)
        if expected is None:
            expected = self.app.consumer._committed_offset.get(TP(*tp))
        self._next_offset[tp] = max(expected or 0, msg.offset + 1)
        if expected is None or msg.offset <= expected:
            return []  # the first record we know of, the next one, or one seen before (a replay)
        log.warning("Faust skipped %s[%d] offsets %d..%d; reading them again", msg.topic, msg.partition,
                    expected, msg.offset - 1)
        records = await asyncio.get_running_loop().run_in_executor(
            None, read_range, msg.topic, msg.partition, expected, msg.offset
        )
        metrics.SKIPPED_REFILLED.inc(len(records))
        return [_RefilledEvent(record) for record in records]

    async def _on_session_input(self, event: Any) -> None:
        msg = event.message
        try:
            record = decode(msg.topic, msg.value)
        except InvalidRecord as exc:
            await self._dead_letter(event, exc.reason, exc.kind)
            return
        callback_id = getattr(record, "callback_id", None)
        if callback_id is None:
            return  # a PBX event of a call that is not a callback
        metrics.INPUTS.labels(record.type).inc()
        now = datetime.fromtimestamp(msg.timestamp, UTC)
        if isinstance(record, CallbackInitiation):
            # an initiation is judged by the clock, not by its record's time: one that waited in
            # Kafka while no worker ran (or a group reset re-read) is refused as stale, never
            # called back long after the caller gave up
            now = max(now, datetime.now(UTC))
        item = InputRecord(msg.topic, msg.partition, msg.offset, record.event_id, record)
        session: Session | None = self.sessions.get(callback_id)
        applied = apply_input(session, item, self.world, now, self._committed)
        if (
            session is None
            and isinstance(record, CallbackInitiation)
            and applied.step is not None
            and applied.step.reason in REFERENCE_MISSES
            and await self._catch_up()
        ):
            log.info("initiation %s: %s; retrying with the reference data read to its end",
                     callback_id, applied.step.reason)
            applied = apply_input(session, item, self.world, now, self._committed)
        if applied.duplicate:
            metrics.DUPLICATES.inc()
            if applied.send:  # Kafka delivered the same record again: its outputs go out again
                log.info("input %s of %s seen before: re-sending its %d output(s)", record.event_id,
                         callback_id, len(applied.send))
            else:  # a copy (the HA pair's other producer, a repeated tick): counted, not logged
                log.debug("input %s of %s seen before", record.event_id, callback_id)
        if applied.delete:
            del self.sessions[callback_id]
            self.wheel.clear(callback_id)
            self._tick_at.pop(callback_id, None)
        elif applied.store is not None:
            store = applied.store
            self.sessions[callback_id] = store
            self._tick_at.pop(callback_id, None)
            if store.due_at is not None and store.due_kind is not None:
                self.wheel.schedule(
                    Due(store.due_at.timestamp(), callback_id, store.timer_seq, store.due_kind, msg.partition)
                )
            else:
                self.wheel.clear(callback_id)
            if record.type == "callback.tick":
                metrics.TIMER_LATENESS.observe(max(0.0, time.time() - record.due_at.timestamp()))
        for entry in applied.send:
            await self._send(entry.topic, entry.key, entry.value.encode())
        if applied.step is not None:
            for t in applied.step.transitions:
                metrics.TRANSITIONS.labels(t.to_state.value).inc()
            for c in applied.step.commands:
                metrics.COMMANDS.labels(c.type).inc()
            for leg in applied.step.legs:
                metrics.LEGS.labels(leg.leg.value).inc()

    def _committed(self, topic: str, partition: int, offset: int) -> bool:
        """Whether Faust has committed past ``offset`` (it flushes its producer before it commits,
        so the outputs of that input are on Kafka)."""
        committed = self.app.consumer._committed_offset.get(TP(topic, partition))
        return committed is not None and committed > offset

    # --- the guard agent ----------------------------------------------------------------------------------
    async def _guard_agent(self, stream: Any) -> None:
        await self._each(stream, self._on_admission)

    async def _on_admission(self, event: Any) -> None:
        msg = event.message
        try:
            record = decode(msg.topic, msg.value)
        except InvalidRecord as exc:
            await self._dead_letter(event, exc.reason, exc.kind)
            return
        if isinstance(record, SessionReleased):
            key = number_key(record.number)
            entry = self.guard.get(key)
            if entry is not None:
                self._put_guard(key, release(entry, record.callback_id))
            return
        assert isinstance(record, AdmissionRequest)
        self._prune_guard(record.received_at)
        n_key = number_key(record.number)
        d_key = did_key(record.did) if record.did else None
        did_entry = (self.guard.get(d_key) or GuardEntry()) if d_key else None
        result = admit(record, self.guard.get(n_key) or GuardEntry(), did_entry)
        self._put_guard(n_key, result.number_entry)
        if d_key is not None and result.did_entry is not None:
            self._put_guard(d_key, result.did_entry)
        metrics.ADMISSIONS.labels("admitted" if result.admitted else result.reason).inc()
        verdict = AdmissionVerdict(
            event_id=f"verdict:{record.callback_id}",
            source=self.source,
            callback_id=record.callback_id,
            admitted=result.admitted,
            reason=result.reason,
        )
        if not result.admitted:
            log.warning("fraud guard refused callback %s to %s: %s", record.callback_id, record.number,
                        result.reason)
        await self._send(CALLBACK_CONTROL.name, record.callback_id, verdict.to_bytes())

    def _prune_guard(self, now: datetime) -> None:
        """Forget numbers and DIDs with nothing left to count (once a minute of traffic): the
        table holds the last minute's callers and the live sessions, not everyone ever seen."""
        if self._guard_pruned_at is not None and (now - self._guard_pruned_at).total_seconds() < 60:
            return
        self._guard_pruned_at = now
        stale = forgettable(list(self.guard.items()), now)
        for key in stale:
            del self.guard[key]
        if stale:
            log.info("fraud guard: forgot %d number(s) with nothing left to count", len(stale))

    def _put_guard(self, key: str, entry: GuardEntry) -> None:
        if entry.empty:
            if key in self.guard:
                del self.guard[key]
        elif self.guard.get(key) != entry:
            self.guard[key] = entry

    # --- timers -------------------------------------------------------------------------------------------
    async def _rebuild_timers(self) -> None:
        """After a rebalance (the table is recovered): the timers of the partitions we now own."""
        mine = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in SESSION_INPUTS}
        timers = [
            Due(s.due_at.timestamp(), s.callback_id, s.timer_seq, s.due_kind, s.partition)
            for s in list(self.sessions.values())
            if s.partition in mine and s.due_at is not None and s.due_kind is not None
        ]
        self.wheel.rebuild(timers)
        self._next_offset.clear()  # from the committed offsets again
        overdue = sum(1 for d in timers if d.at <= time.time())
        log.info("processors ready: partitions %s, %d timers (%d overdue)", sorted(mine), len(timers),
                 overdue)

    async def _fire_due_timers(self) -> None:
        try:
            self._produce_ticks(self.wheel.take_due(time.time()))
        except Exception:  # a timer that raises would stop Faust's timer for good: log, go on
            log.exception("firing due timers failed; the sweep sends them again")

    async def _sweep(self) -> None:
        try:
            self._produce_ticks(self.wheel.overdue(time.time(), self._tick_passed))
            metrics.PENDING_TIMERS.set(len(self.wheel))
        except Exception:
            log.exception("timer sweep failed; trying again in the next one")

    def _produce_ticks(self, dues: list[Due]) -> None:
        now = time.time()
        for due in dues:
            tick = due.tick(self.source, now)
            self._tick_at.pop(due.callback_id, None)
            while True:
                try:
                    self.ticks.produce(
                        CALLBACK_CONTROL.name, key=due.callback_id.encode(), value=tick.to_bytes(),
                        on_delivery=self._tick_delivered,
                    )
                    break
                except BufferError:
                    self.ticks.poll(0.01)
        self.ticks.poll(0)

    def _tick_delivered(self, err: Any, msg: Any) -> None:
        callback_id = msg.key().decode()
        if err is not None:
            log.warning("tick of %s not delivered (%s); the sweep sends it again", callback_id, err)
            self._tick_at[callback_id] = None
        else:
            self._tick_at[callback_id] = (msg.partition(), msg.offset())

    def _tick_passed(self, callback_id: str) -> bool:
        """Whether the agent has read past the last tick sent for ``callback_id`` (or its send
        failed): a tick still waiting in the topic is not sent again."""
        if callback_id not in self._tick_at:
            return False  # not even acknowledged by Kafka yet
        where = self._tick_at[callback_id]
        if where is None:
            return True
        partition, offset = where
        return self._next_offset.get((CALLBACK_CONTROL.name, partition), -1) > offset


class _RefilledEvent:
    """A record read again from Kafka, shaped like the Faust event the agents handle."""

    def __init__(self, record: Any) -> None:
        self.message = record


def read_range(topic: str, partition: int, start: int, end: int, timeout_s: float = 30.0) -> list[Any]:
    """Records ``start`` .. ``end - 1`` of one partition, as Faust messages."""
    consumer = Consumer(consumer_config(f"{PROCESSORS_APP_ID}-refill", read_committed=False))
    found: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout_s
        reached = start - 1  # records below ``start`` may be gone (retention): stop at ``end`` anyway
        while time.monotonic() < deadline and reached < end - 1:
            for record in consumer.consume(num_messages=end - start, timeout=0.5):
                if record.error() is not None:
                    continue
                reached = max(reached, record.offset())
                if start <= record.offset() < end:
                    kind, ms = record.timestamp()
                    found.append(FaustMessage(
                        record.topic(), record.partition(), record.offset(), ms / 1000, kind,
                        record.headers(), record.key(), record.value(), None,
                    ))
    finally:
        consumer.close()
    return found


class StaleLocalTables(RuntimeError):
    """The tables on local disk are ahead of their changelogs: the disk copy belongs to another
    Kafka cluster, or to topics that were deleted and created again."""


def local_tables_dir(settings: Settings) -> Path:
    return settings.processors.data_dir / settings.processors.instance


def run_worker(settings: Settings) -> None:
    """Run one Faust worker until it stops; raises SystemExit (0 after SIGTERM / SIGINT), or
    StaleLocalTables when Faust refused the disk copy of the tables."""
    local_tables_dir(settings).mkdir(parents=True, exist_ok=True)
    processors = Processors(settings)
    worker = faust.Worker(processors.app, loglevel=settings.log_level.lower(), quiet=True,
                          redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        app = processors.app
        reasons = [worker.crash_reason, app.crash_reason, app.tables.recovery.crash_reason]
        stale = [r for r in reasons if isinstance(r, ConsistencyError)]
        if stale:
            raise StaleLocalTables(str(stale[0])) from None
        raise
    finally:
        processors.ticks.flush(10)
