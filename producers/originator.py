"""``callback originator``: executes ``pbx.commands`` as AMI actions, each command id at most once.

Per record, in this order (see ``journal.py`` for why each crash window is safe):

1. Parse. A malformed record, or one whose ids cannot travel in an AMI header, goes to
   ``dlq.pbx.commands`` with the reason; its offset is committed; the stream goes on.
2. Already in the journal -> skipped (counted), committed. This is what makes a redelivered
   command, or one replayed after a restart, ring nobody.
3. Older than ``max_age_s`` (the originator was down, or a topic was re-read): ``command.failed``,
   not a late ring. Unknown Callback Server, or its PBX unreachable for ``connect_wait_s``:
   ``command.failed`` (journalled ``not_sent``), not a crash.
4. Journal ``intent`` + fsync, then commit the offset synchronously: the Kafka-side "executed"
   marker. After a rebalance another originator instance (with another journal) starts after it, so
   it never sends the same command either. If the commit fails, the command is not sent
   (``command.failed``, journalled ``not_sent``): better reported than rung twice.
5. Send the AMI action(s) and wait for the PBX's immediate reply (``Originate`` is ``Async``):
   ``Success`` -> journalled ``sent``; ``Error`` -> ``command.failed``; no reply (connection lost)
   -> ``command.failed`` with ``outcome_unknown``. Never re-sent.

Outcomes: the PBX's own events say what happened to a call (``originate.result`` with the command id,
answers, hangups), and the AMI producer, which is connected all the time and buffers through Kafka
outages, publishes them; this process publishes only what the PBX's event stream cannot show, i.e.
``command.failed``. So an originate survives an originator SIGKILL right after the send: its result
still reaches ``pbx.events``.

Which PBX: the command's ``server_id``, which the processors take from the Callback Server setting
(``processors.callback_settings.callback_server``). Caller ID: the command's; when it has none, the
context-free part of the CID policy (Callback CID, then default CID) from the system callback
settings (``processors.caller_id.fallback_caller_id``). Servers and settings are followed through the
shared reference fold (docs/architecture.md, "State read from Kafka"): a changed server is logged
in again on next use, a deleted one is forgotten (its commands fail as for an unknown server).

Panoramisk re-sends actions that were queued while disconnected; every action here is marked
"forgettable" so it never does (a re-send after an ambiguous loss could ring twice).

Secrets: a PBX's address and user come from ``config.servers`` (or ``--config``), its AMI secret
from this process's settings, ``ami.secrets.<server_id>`` (``CALLBACK_AMI__SECRETS__<ID>``), or, with
``--config``, from the deprecated ``ami_secret`` of the file. A command for a PBX without a secret
is reported ``command.failed`` (``no_secret``), like an unreachable one.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from panoramisk import Manager
from pydantic import ValidationError

from callback.kafka_io import consumer_config, dead_letter, is_record, producer_config
from processors.caller_id import fallback_caller_id
from producers.action_ids import is_header_safe
from producers.ami_actions import actions_for
from producers.journal import Journal
from producers.metrics import (
    COMMANDS_DEAD_LETTERED,
    COMMANDS_EXECUTED,
    COMMANDS_FAILED,
    COMMANDS_READ,
    COMMANDS_SKIPPED_DUPLICATE,
)
from producers.reference_data import MissingAmiSecret, ami_secret_for
from schemas.envelope import utc_now
from schemas.pbx_commands import Originate, PbxCommand, PbxCommandRecord
from schemas.pbx_events import CommandFailed
from schemas.reference import CallbackServer, CallbackSettings
from schemas.topics import PBX_COMMANDS, PBX_EVENTS

if TYPE_CHECKING:
    from callback.reference_feed import ReferenceFollower

log = logging.getLogger(__name__)

SOURCE = "originator"
_FORGETTABLE = ("ping", "login", "logoff", "originate", "hangup", "redirect", "setvar")


@dataclass(frozen=True)
class OriginatorOptions:
    journal_path: Path
    config_file: Path | None
    group_id: str
    metrics_port: int = 0
    connect_wait_s: float = 5.0
    action_timeout_s: float = 10.0
    #: a command older than this is not executed: ringing someone back for a request made long ago
    #: (the originator was down, the topic was re-read) is worse than reporting it failed
    max_age_s: float = 300.0
    #: where a brand-new consumer group starts; "latest" so a new deployment never replays old commands
    start_at: str = "latest"


class AmiPool:
    """One logged-in panoramisk Manager per Callback Server, connected on first use and kept connected
    (panoramisk reconnects by itself; we only read whether it is logged in).

    ``legacy_secrets``: the ``ami_secret`` entries of a ``--config`` file, used only for a PBX the
    settings have no secret for (``producers.reference_data.ami_secret_for``)."""

    def __init__(self, legacy_secrets: dict[str, str] | None = None, legacy_source: str = "") -> None:
        self.servers: dict[str, CallbackServer] = {}
        self._managers: dict[str, Manager] = {}
        self.legacy_secrets = dict(legacy_secrets or {})
        self.legacy_source = legacy_source

    def secret(self, server_id: str) -> str | None:
        return ami_secret_for(server_id, self.legacy_secrets, self.legacy_source)

    def sync(self, servers: dict[str, CallbackServer]) -> None:
        """Take ``servers`` (by id) as the configured set: a changed server is reconnected on next
        use, a deleted one is logged out and its commands fail as for an unknown server."""
        for server_id in sorted(set(self.servers) - set(servers)):
            log.info("server %s deleted; disconnecting", server_id)
            del self.servers[server_id]
            manager = self._managers.pop(server_id, None)
            if manager is not None:
                manager.close()
        for server_id, server in servers.items():
            old = self.servers.get(server_id)
            self.servers[server_id] = server
            if old is not None and old != server and server_id in self._managers:
                log.info("server %s changed; reconnecting", server_id)
                self._managers.pop(server_id).close()

    async def manager(self, server_id: str, wait_s: float) -> Manager | None:
        server = self.servers.get(server_id)
        secret = self.secret(server_id)
        if server is None or secret is None:
            return None
        manager = self._managers.get(server_id)
        if manager is None:
            manager = Manager(
                loop=asyncio.get_running_loop(),
                host=server.ami_host,
                port=server.ami_port,
                username=server.ami_username,
                secret=secret,
                events="off",
                reconnect_timeout=1,
                ping_delay=5,
                ping_interval=5,
                forgetable_actions=_FORGETTABLE,
                log=logging.getLogger(f"ami.{server_id}"),
            )
            manager.connect()
            self._managers[server_id] = manager
        deadline = asyncio.get_running_loop().time() + wait_s
        while not (manager._connected and manager.authenticated):
            if asyncio.get_running_loop().time() >= deadline:
                return None
            await asyncio.sleep(0.05)
        return manager

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()


@dataclass
class Originator:
    journal: Journal
    pool: AmiPool
    consumer: Consumer
    producer: Producer
    options: OriginatorOptions
    system_settings: Callable[[], CallbackSettings | None] = lambda: None

    # --- start-up ----------------------------------------------------------------------------------

    def report_dangling(self) -> None:
        """Intents without outcome (crash between journal and send): report them, never send them."""
        for entry in self.journal.dangling():
            info = entry.info
            log.error(
                "command %s was journalled but its send is unconfirmed (crash?); reporting outcome "
                "unknown, NOT re-sending",
                entry.id,
            )
            self._publish_failure(
                command_id=entry.id,
                command_type=str(info.get("type", "unknown")),
                callback_id=info.get("callback_id"),
                server_id=str(info.get("server", "unknown")),
                error="originator stopped between journalling and confirming the AMI send; not retried",
                outcome_unknown=True,
                reason="crash_window",
            )
            self.journal.record(entry.id, "reported")

    # --- per record --------------------------------------------------------------------------------

    async def handle(self, msg: Message) -> None:
        COMMANDS_READ.inc()
        try:
            cmd = PbxCommandRecord.model_validate_json(msg.value() or b"").root
        except ValidationError as exc:
            first = exc.errors()[0]
            kind = "malformed_json" if first["type"] == "json_invalid" else "invalid_schema"
            if "schema_version" in ".".join(str(p) for p in first.get("loc", ())):
                kind = "unknown_schema_version"
            await self._dead_letter(msg, f"{first.get('msg')} at {first.get('loc')}", kind)
            return
        unsafe = [
            name
            for name, value in (("command_id", cmd.command_id), ("callback_id", cmd.callback_id))
            if not is_header_safe(value)
        ]
        if unsafe:
            await self._dead_letter(msg, f"{', '.join(unsafe)} cannot be sent in an AMI header", "unsafe_id")
            return
        age = (utc_now() - cmd.time).total_seconds()
        if cmd.command_id not in self.journal and age > self.options.max_age_s:
            await self._refuse(
                cmd,
                msg,
                f"command is {age:.0f} s old (max {self.options.max_age_s:.0f} s); not executed",
                "stale",
            )
            return
        if cmd.command_id in self.journal:
            COMMANDS_SKIPPED_DUPLICATE.labels(cmd.type).inc()
            log.info(
                "command %s (%s, callback %s) already executed (journal state %s); skipped",
                cmd.command_id,
                cmd.type,
                cmd.callback_id,
                self.journal.state(cmd.command_id),
            )
            await self._commit(msg)
            return
        await self._execute(cmd, msg)

    async def _execute(self, cmd: PbxCommand, msg: Message) -> None:
        server_id = cmd.server_id
        if server_id not in self.pool.servers:
            await self._refuse(cmd, msg, f"Callback Server {server_id!r} is not configured", "unknown_server")
            return
        if self.pool.secret(server_id) is None:
            await self._refuse(cmd, msg, str(MissingAmiSecret(server_id)), "no_secret")
            return
        manager = await self.pool.manager(server_id, self.options.connect_wait_s)
        if manager is None:
            await self._refuse(
                cmd,
                msg,
                f"PBX {server_id} unreachable (no AMI login within {self.options.connect_wait_s:.0f} s)",
                "pbx_unreachable",
            )
            return
        fallback = None
        if isinstance(cmd, Originate) and cmd.caller_id_num is None:
            settings = self.system_settings()
            if settings is not None:
                decision = fallback_caller_id(settings)
                fallback = decision.number
                log.info(
                    "command %s has no CallerID; CID policy fallback: %s (%s)",
                    cmd.command_id,
                    fallback or "PBX default",
                    decision.reason,
                )
        actions = actions_for(cmd, fallback_cid=fallback)

        self.journal.record(
            cmd.command_id, "intent", type=cmd.type, callback_id=cmd.callback_id, server=server_id
        )
        try:
            await self._commit(msg, strict=True)
        except KafkaException as exc:
            self.journal.record(cmd.command_id, "not_sent", error=f"commit failed: {exc}")
            self._publish_failure_for(
                cmd, f"offset commit failed before the send, not executed: {exc}", reason="commit_failed"
            )
            await self._flush()
            return

        for step, action in enumerate(actions):
            try:
                response = await asyncio.wait_for(
                    manager.send_action(action, as_list=False), self.options.action_timeout_s
                )
            except (TimeoutError, ConnectionError, OSError, AttributeError) as exc:
                # AttributeError: panoramisk's transport vanished mid-send (connection lost)
                self.journal.record(cmd.command_id, "unknown", step=step, error=repr(exc))
                self._publish_failure_for(
                    cmd,
                    f"no reply from PBX {server_id} to {action['Action']} "
                    f"({type(exc).__name__}); not retried",
                    outcome_unknown=True,
                    reason="no_reply",
                )
                await self._flush()
                return
            reply = _reply(response)
            if reply.get("Response") != "Success":
                message = reply.get("Message") or str(reply)
                self.journal.record(cmd.command_id, "refused", step=step, error=message)
                log.warning(
                    "PBX %s refused %s of command %s (callback %s): %s",
                    server_id,
                    action["Action"],
                    cmd.command_id,
                    cmd.callback_id,
                    message,
                )
                self._publish_failure_for(cmd, f"PBX refused {action['Action']}: {message}", reason="refused")
                await self._flush()
                return
        self.journal.record(cmd.command_id, "sent", actions=len(actions))
        COMMANDS_EXECUTED.labels(server_id, cmd.type).inc()
        log.info("executed %s %s on %s (callback %s)", cmd.type, cmd.command_id, server_id, cmd.callback_id)

    async def _refuse(self, cmd: PbxCommand, msg: Message, error: str, reason: str) -> None:
        log.error(
            "command %s (%s, callback %s) not executed: %s", cmd.command_id, cmd.type, cmd.callback_id, error
        )
        self.journal.record(cmd.command_id, "not_sent", error=error)
        self._publish_failure_for(cmd, error, reason=reason)
        await self._flush()
        await self._commit(msg)

    # --- Kafka plumbing ----------------------------------------------------------------------------

    def _publish_failure_for(
        self, cmd: PbxCommand, error: str, *, outcome_unknown: bool = False, reason: str
    ) -> None:
        leg = getattr(cmd, "leg", None)
        self._publish_failure(
            command_id=cmd.command_id,
            command_type=cmd.type,
            callback_id=cmd.callback_id,
            server_id=cmd.server_id,
            error=error,
            outcome_unknown=outcome_unknown,
            reason=reason,
            leg=leg,
            attempt=getattr(cmd, "attempt", None),
        )

    def _publish_failure(
        self,
        *,
        command_id: str,
        command_type: str,
        callback_id: str | None,
        server_id: str,
        error: str,
        outcome_unknown: bool,
        reason: str,
        leg: Any = None,
        attempt: int | None = None,
    ) -> None:
        COMMANDS_FAILED.labels(server_id, command_type, reason).inc()
        event = CommandFailed(
            source=SOURCE,
            pbx_id=server_id,
            callback_id=callback_id,
            leg=leg,
            attempt=attempt,
            occurred_at=utc_now(),
            command_id=command_id,
            command_type=command_type,
            error=error,
            outcome_unknown=outcome_unknown,
        )
        self.producer.produce(PBX_EVENTS.name, key=event.kafka_key.encode(), value=event.to_bytes())

    async def _dead_letter(self, msg: Message, reason: str, kind: str) -> None:
        COMMANDS_DEAD_LETTERED.labels(kind).inc()
        dead_letter(
            self.producer,
            source=SOURCE,
            source_topic=PBX_COMMANDS.name,
            reason=reason,
            error_kind=kind,
            key=msg.key(),
            value=msg.value(),
            partition=msg.partition(),
            offset=msg.offset(),
        )
        await self._flush()
        await self._commit(msg)

    async def _flush(self) -> None:
        remaining = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 30)
        if remaining:
            raise RuntimeError(f"{remaining} failure report(s) not delivered to Kafka within 30 s")

    async def _commit(self, msg: Message, *, strict: bool = False) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, lambda: self.consumer.commit(message=msg, asynchronous=False))
        except KafkaException:
            if strict:
                raise
            log.warning(
                "offset commit failed for %s[%d]@%d; the journal covers a redelivery",
                msg.topic(),
                msg.partition(),
                msg.offset(),
            )


def _reply(response: Any) -> dict[str, str]:
    if isinstance(response, list):
        response = response[0] if response else {}
    return {k: (v if isinstance(v, str) else str(v)) for k, v in dict(response.items()).items()}


# --- process -------------------------------------------------------------------------------------


async def _follow_reference(
    options: OriginatorOptions, pool: AmiPool
) -> tuple[Callable[[], CallbackSettings | None], ReferenceFollower | None]:
    """Servers and system settings, from the YAML or the compacted topics: (settings getter,
    the ``ReferenceFollower`` keeping them current, or None for a file)."""
    if options.config_file is not None:
        from producers.reference_data import load_config

        config = load_config(options.config_file)
        pool.legacy_secrets = config.legacy_ami_secrets
        pool.legacy_source = str(options.config_file)
        pool.sync({server.server_id: server for server in config.servers})
        return (lambda: config.callback_settings), None
    from callback.reference import ReferenceData
    from callback.reference_feed import ReferenceFeed, ReferenceFollower
    from schemas.topics import CONFIG_SERVERS, CONFIG_SETTINGS

    loop = asyncio.get_running_loop()
    state: dict[str, CallbackSettings | None] = {"system": None}

    def on_change(data: ReferenceData) -> None:
        # on the follower's thread: copy what the loop needs, never hand it the changing fold
        state["system"] = data.system_settings()
        loop.call_soon_threadsafe(pool.sync, dict(data.servers))

    feed = ReferenceFeed((CONFIG_SERVERS.name, CONFIG_SETTINGS.name), purpose="originator")
    follower = ReferenceFollower(feed, on_change, name="originator-reference")
    await loop.run_in_executor(None, follower.start)
    return (lambda: state["system"]), follower


async def _run(options: OriginatorOptions) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    journal = Journal(options.journal_path)
    pool = AmiPool()
    settings_getter, follower = await _follow_reference(options, pool)
    consumer = Consumer(
        consumer_config(
            options.group_id,
            **{
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 300_000,
                "auto.offset.reset": options.start_at,
            },
        )
    )
    producer = Producer(producer_config(**{"client.id": "callback-originator"}))
    originator = Originator(journal, pool, consumer, producer, options, settings_getter)
    log.info(
        "originator: journal %s (%d ids), servers %s, group %s",
        options.journal_path,
        len(journal),
        ", ".join(sorted(pool.servers)) or "(from config.servers)",
        options.group_id,
    )
    for server_id in sorted(pool.servers):
        if pool.secret(server_id) is None:
            log.error("%s; its commands will be reported failed", MissingAmiSecret(server_id))
    originator.report_dangling()
    await originator._flush()

    def on_assign(c: Consumer, partitions: list[Any]) -> None:
        """Pin where a partition without a committed offset starts *now*, so nothing produced after the
        assignment can be skipped by a lazily resolved "latest" (and log it: tests and operators wait
        for this line)."""
        committed = c.committed(partitions, timeout=30)
        pinned = []
        for tp in committed:
            if tp.offset < 0:
                low, high = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=30)
                tp.offset = high if options.start_at == "latest" else low
                pinned.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        if pinned:
            # commit the pins: after this the group has a position everywhere, so a restart resumes
            # exactly here and never skips commands produced while it was down
            c.commit(offsets=pinned, asynchronous=False)
        c.assign(committed)
        log.info(
            "assigned %s partitions %s at offsets %s",
            PBX_COMMANDS.name,
            [tp.partition for tp in committed],
            [tp.offset for tp in committed],
        )

    consumer.subscribe([PBX_COMMANDS.name], on_assign=on_assign)
    try:
        while not stop.is_set():
            msg = await loop.run_in_executor(None, consumer.poll, 0.5)
            if msg is None:
                continue
            if not is_record(msg, PBX_COMMANDS.name):
                continue
            try:
                await originator.handle(msg)
            except Exception:  # one bad record must not stop the stream
                log.exception(
                    "command at %s[%d]@%d crashed its handler; dead-lettering",
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                )
                await originator._dead_letter(msg, "handler error (see originator log)", "handler_error")
    finally:
        if follower is not None:
            follower.stop()
        consumer.close()
        producer.flush(10)
        pool.close()
        journal.close()
    return 0


def run_originator(options: OriginatorOptions) -> int:
    if options.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(options.metrics_port, addr="127.0.0.1")
    return asyncio.run(_run(options))
