"""Reference data the AMI side needs: servers, access numbers (DIDs), users, callback settings.

Two sources, the same shapes (``schemas.reference``): a carrier YAML (``--config``, for tests and
small deployments) or the compacted ``config.*`` topics, read from the beginning at start and then
followed, so a DID added with ``callback config load`` becomes an access number without a restart.

AMI secrets are not reference data (``config.servers`` carries host, port, user and contexts only):
``ami_secret_for`` takes a PBX's secret from the settings (``ami.secrets.<server_id>``, e.g.
``CALLBACK_AMI__SECRETS__PBX1``), else from the ``ami_secret`` a ``--config`` carrier file still
carries (deprecated: warned once per PBX).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ValidationError

from callback.kafka_io import consumer_config
from callback.settings import get_settings
from schemas.carrier_config import CarrierConfig, load_carrier_config
from schemas.reference import CallbackServer
from schemas.topics import CONFIG_SERVERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AmiEndpoint:
    pbx_id: str
    host: str
    port: int
    username: str
    secret: str

    def __str__(self) -> str:  # never print the secret
        return f"{self.pbx_id} ({self.username}@{self.host}:{self.port})"


class MissingAmiSecret(ValueError):
    """No secret to log in to a PBX with; the message says where to put one."""

    def __init__(self, server_id: str, *, flag: bool = False) -> None:
        self.server_id = server_id
        also = ", or pass --secret / CALLBACK_AMI_SECRET" if flag else ""
        super().__init__(
            f"no AMI secret for PBX {server_id}: set ami.secrets.{server_id} in the settings file "
            f"(CALLBACK_SETTINGS_FILE) or CALLBACK_AMI__SECRETS__{_env_name(server_id)}=...{also}"
        )


def _env_name(server_id: str) -> str:
    return server_id.upper()


_warned_legacy: set[str] = set()


def ami_secret_for(server_id: str, legacy: Mapping[str, str] | None = None, source: str = "") -> str | None:
    """The AMI secret of ``server_id``: the settings' ``ami.secrets``, else ``legacy`` (the secrets a
    carrier file still carries, deprecated: warned once per PBX), else None."""
    secret = get_settings().ami.secret_for(server_id)
    if secret is not None:
        return secret
    if legacy and server_id in legacy:
        if server_id not in _warned_legacy:
            _warned_legacy.add(server_id)
            log.warning(
                "PBX %s: using the ami_secret of %s (deprecated: put it in the settings, "
                "ami.secrets.%s or CALLBACK_AMI__SECRETS__%s, and remove it from the file)",
                server_id,
                source or "the carrier file",
                server_id,
                _env_name(server_id),
            )
        return legacy[server_id]
    return None


def endpoint_of(server: CallbackServer, secret: str) -> AmiEndpoint:
    return AmiEndpoint(server.server_id, server.ami_host, server.ami_port, server.ami_username, secret)


def load_config(path: Path) -> CarrierConfig:
    return load_carrier_config(path)


class TopicFollower:
    """Reads a compacted topic from the beginning, then keeps following it, in a daemon thread.

    ``on_record(key, model | None)`` runs for every record (None = tombstone or invalid value, which is
    logged); ``caught_up`` is set once the end offsets seen at start have been read.
    """

    def __init__(
        self, topic: str, model: type[BaseModel], on_record: Callable[[str, BaseModel | None], None]
    ) -> None:
        self.topic = topic
        self.model = model
        self.on_record = on_record
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"follow-{topic}", daemon=True)

    def start(self, wait_s: float = 30.0) -> bool:
        """Start following; True when the topic was read to its end within ``wait_s``."""
        self._thread.start()
        return self.caught_up.wait(wait_s)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        conf = consumer_config(
            f"follower-{self.topic}-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
        consumer = Consumer(conf)
        try:
            metadata = consumer.list_topics(self.topic, timeout=30)
            partitions = sorted(metadata.topics[self.topic].partitions)
            ends: dict[int, int] = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)
                if high > low:
                    ends[p] = high
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            if not ends:
                self.caught_up.set()
            while not self._stop.is_set():
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        # the end: also when the last offset is a transaction marker, which no
                        # record ever reaches (config load publishes in one transaction)
                        self._reached(ends, msg.partition())
                    else:
                        log.warning("%s: %s", self.topic, msg.error())
                    continue
                self._handle(msg.key(), msg.value())
                if msg.partition() in ends and msg.offset() + 1 >= ends[msg.partition()]:
                    self._reached(ends, msg.partition())
        except KafkaException as exc:
            log.error("following %s failed: %s", self.topic, exc)
        finally:
            consumer.close()

    def _reached(self, ends: dict[int, int], partition: int) -> None:
        if ends.pop(partition, None) is not None and not ends:
            self.caught_up.set()

    def _handle(self, raw_key: bytes | None, raw_value: bytes | None) -> None:
        key = raw_key.decode(errors="replace") if raw_key else ""
        if raw_value is None:
            self.on_record(key, None)
            return
        try:
            self.on_record(key, self.model.model_validate_json(raw_value))
        except ValidationError as exc:
            log.error("%s[%s]: invalid record ignored: %s", self.topic, key, exc.errors()[0].get("msg"))


def servers_from_topic(wait_s: float = 30.0) -> dict[str, CallbackServer]:
    """Every configured Callback Server, read once from ``config.servers``."""
    servers: dict[str, CallbackServer] = {}

    def on_record(key: str, value: BaseModel | None) -> None:
        if isinstance(value, CallbackServer):
            servers[value.server_id] = value
        else:
            servers.pop(key, None)

    follower = TopicFollower(CONFIG_SERVERS.name, CallbackServer, on_record)
    caught_up = follower.start(wait_s)
    follower.stop()
    if not caught_up:
        log.warning("config.servers not read to its end within %.0f s", wait_s)
    return servers


def resolve_ami_endpoint(
    pbx: str,
    *,
    config: Path | None,
    host: str | None,
    port: int | None,
    username: str | None,
    secret: str | None,
) -> AmiEndpoint:
    """Where PBX ``pbx`` listens: the config file or ``config.servers``, each field overridable by flag/env.

    The secret: ``secret`` (``--secret`` / ``CALLBACK_AMI_SECRET``), else the settings
    (``ami.secrets.<pbx>``), else the deprecated ``ami_secret`` of the ``config`` file; none of them
    is an error (``MissingAmiSecret``). When host, port, username and secret are all known from flags
    and settings, no configuration is read at all.
    """
    if secret is None:
        secret = ami_secret_for(pbx)
    if host and port and username and secret is not None:
        return AmiEndpoint(pbx, host, port, username, secret)
    legacy: dict[str, str] = {}
    if config is not None:
        carrier = load_config(config)
        servers = {s.server_id: s for s in carrier.servers}
        legacy = carrier.legacy_ami_secrets
    else:
        servers = servers_from_topic()
    if pbx not in servers:
        raise SystemExit(
            f"PBX {pbx!r} is not a configured Callback Server ({', '.join(sorted(servers)) or 'none'})"
        )
    if secret is None:
        secret = ami_secret_for(pbx, legacy, str(config))
    if secret is None:
        raise MissingAmiSecret(pbx, flag=True)
    base = endpoint_of(servers[pbx], secret)
    return AmiEndpoint(pbx, host or base.host, port or base.port, username or base.username, secret)
