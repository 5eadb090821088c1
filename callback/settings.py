"""Runtime settings: one place where every process learns where Kafka, ClickHouse and the stack live.

Values come, highest first, from environment variables (``CALLBACK_...``), then from an optional
YAML file named by ``CALLBACK_SETTINGS_FILE``, then from the defaults below, which point at the
embedded local stack on 127.0.0.1. A carrier points the pipeline at their own clusters with e.g.
``CALLBACK_KAFKA__BOOTSTRAP_SERVERS=kafka1:9092,kafka2:9092``.

Secrets live here, not in the carrier's reference data: the AMI secret of each PBX is
``ami.secrets.<server_id>`` (settings YAML) or ``CALLBACK_AMI__SECRETS__<SERVER_ID>`` (environment),
read only by the processes that log in to a PBX (``callback producer``, ``callback originator``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    #: extra librdkafka properties merged into every client (e.g. sasl.* for a carrier's cluster, or a
    #: producer's compression.type); a producer's acks, idempotence and partitioner stay as they are
    extra: dict[str, str] = Field(default_factory=dict)


class ClickHouseSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9000
    http_port: int = 8123
    database: str = "callback"
    user: str = "default"
    password: str = ""
    #: name of the ``<remote_servers>`` cluster whose replicas hold the tables: ``callback migrate``
    #: then creates Replicated* tables on every replica (``host:port`` and ``alt_hosts``) and the
    #: Distributed ``callback.cdr_all`` over it; '' = one server, plain MergeTree tables
    cluster: str = ""
    #: the other replicas as ``host:port,host:port``: every client fails over to them in order when
    #: ``host:port`` does not answer (clickhouse-driver's ``alt_hosts``), and migrations reach them all
    alt_hosts: str = ""

    def replica_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every server these settings name: ``host:port`` first, then ``alt_hosts``."""
        addresses = [(self.host, self.port)]
        for item in filter(None, (part.strip() for part in self.alt_hosts.split(","))):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"clickhouse.alt_hosts: {item!r} is not host:port")
            addresses.append((host, int(port)))
        return addresses


class StackSettings(BaseModel):
    """The embedded local stack (``callback stack up``); ignored when pointing at external clusters."""

    state_dir: Path = REPO_ROOT / ".stack"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    clickhouse_tcp_port: int = 9000
    clickhouse_http_port: int = 8123
    kafka_heap: str = "512m"
    #: 1 = one ClickHouse server, as always; 2 = two replicas of one shard and a ZooKeeper
    #: (``callback stack up --clickhouse-replicas 2``). Replica n (1-based) listens on the
    #: clickhouse_*_port settings plus n - 1; the interserver (replication) port is used only then
    clickhouse_replicas: int = 1
    clickhouse_interserver_port: int = 9009
    zookeeper_port: int = 2181
    #: Kafka nodes of the local stack: 1, or 3 for a cluster that survives the loss of one node
    #: (``callback stack up --brokers 3``). Node 1 listens on ``kafka_port`` and
    #: ``kafka_controller_port``; node n on each of them + 2 * (n - 1) (infra.stack.KafkaNode).
    brokers: int = Field(1, ge=1)


class SessionTimeouts(BaseModel):
    """How long a callback session waits for each thing before its watchdog acts (seconds)."""

    model_config = {"frozen": True}

    #: the fraud guard's verdict
    admission_s: float = Field(30.0, gt=0)
    #: leg A's Originate result, beyond the Wait Time
    originate_margin_s: float = Field(30.0, gt=0)
    #: the next IVR input (card number, PIN, destination)
    ivr_s: float = Field(120.0, gt=0)
    #: leg B's Dial result, beyond the Wait Time
    dial_margin_s: float = Field(30.0, gt=0)
    #: the end of a bridged call, beyond leg B's maximum duration (or this long when unlimited)
    bridged_margin_s: float = Field(120.0, gt=0)
    bridged_unlimited_s: float = Field(4 * 3600.0, gt=0)
    #: the hangup events of legs still up once the session has its outcome
    closing_s: float = Field(120.0, gt=0)
    #: how long an ended session is remembered (a repeated initiation id is recognised meanwhile)
    retention_s: float = Field(3600.0, gt=0)
    #: an initiation older than this when it reaches the processors is refused, not called back
    max_initiation_age_s: float = Field(120.0, gt=0)


class ProcessorsSettings(BaseModel):
    """``callback processors``: the Faust worker that runs the callback sessions."""

    #: names this worker: its static group membership (a restart within the session timeout gets
    #: its partitions back at once), its data folder and its metrics
    instance: str = Field("0", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: Faust binds a web port even with its web views unused: one port per worker on a host
    web_port: int = Field(6066, ge=1, le=65535)
    data_dir: Path = REPO_ROOT / ".processors"
    metrics_port: int = Field(0, ge=0, le=65535)
    #: a dead worker's partitions move after this (Faust's default, 60 s, is far too slow here)
    session_timeout_s: float = Field(10.0, ge=6.0)
    heartbeat_interval_s: float = Field(2.0, gt=0)
    commit_interval_s: float = Field(1.0, gt=0)
    #: warm copies of other workers' tables, so a failover does not replay the whole changelog
    standby_replicas: int = Field(1, ge=0)
    #: timer loop period and resend sweep period
    tick_interval_s: float = Field(0.1, gt=0)
    sweep_interval_s: float = Field(1.0, gt=0)
    #: timer ticks sent and not yet applied, at most: a worker back after an outage, with thousands
    #: of timers overdue, feeds them to its partitions this many at a time, so a new initiation
    #: waits behind at most these many ticks instead of all of them (and is not judged stale)
    max_ticks_in_flight: int = Field(1000, ge=1)
    timeouts: SessionTimeouts = Field(default_factory=SessionTimeouts)


class AmiSettings(BaseModel):
    """How the AMI side logs in to each PBX (Callback Server); the server's address, user and
    dialplan contexts come from ``config.servers`` (or the carrier file), never its secret."""

    #: server_id -> AMI secret (manager.conf). From the environment the server id is the rest of the
    #: variable name, e.g. ``CALLBACK_AMI__SECRETS__PBX1=...`` for ``pbx1``; environment names are
    #: case-insensitive, so ids are matched without regard to case when no exact match exists.
    secrets: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("secrets", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        """``secret: 1234`` in YAML is a number; a secret is the text as written."""
        if isinstance(value, dict):
            return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items() if v is not None}
        return value

    def secret_for(self, server_id: str) -> str | None:
        """The secret of ``server_id``, or None when these settings have none for it."""
        if server_id in self.secrets:
            return self.secrets[server_id]
        folded = server_id.casefold()
        matches = [v for k, v in self.secrets.items() if k.casefold() == folded]
        return matches[0] if len(matches) == 1 else None


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by CALLBACK_SETTINGS_FILE, if any."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("CALLBACK_SETTINGS_FILE")
        if not path:
            return {}
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: settings file must be a mapping at the top level")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLBACK_", env_nested_delimiter="__", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    processors: ProcessorsSettings = Field(default_factory=ProcessorsSettings)
    ami: AmiSettings = Field(default_factory=AmiSettings)
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
