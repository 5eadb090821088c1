"""The local stack against real servers: what every component builds on must hold here first.

Kafka delivery with both client libraries we use (confluent-kafka for producers and the rating
stream, aiokafka underneath Faust), transactions with read_committed consumers, the catalogue as
the broker reports it, ClickHouse round trips and the migration runner.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from infra import stack as local_stack
from infra.migrate import MigrationError, apply_migrations
from infra.process import group_members, is_alive, port_is_free
from infra.topics import apply_catalogue
from schemas.topics import ACCOUNTS_BALANCES, CATALOGUE, CDR_RATED, CONFIG_TOPICS, TopicSpec

pytestmark = pytest.mark.integration


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def admin(stack) -> AdminClient:
    return AdminClient({"bootstrap.servers": stack.bootstrap_servers})


@pytest.fixture
def topic(stack, admin: AdminClient) -> Iterator[str]:
    """A fresh single-partition topic (auto-creation is off on our broker), deleted afterwards."""
    name = _unique("test.stack")
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(timeout=30)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


def _consume_confluent(bootstrap: str, topic: str, expected: int, isolation: str = "read_committed",
                       timeout: float = 20.0) -> list[tuple[bytes | None, bytes | None]]:
    """Read partition 0 from the beginning until ``expected`` records arrived or time ran out."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": _unique("test-group"),
                         "enable.auto.commit": False, "isolation.level": isolation})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append((message.key(), message.value()))
    finally:
        consumer.close()
    return records


async def _consume_aiokafka(bootstrap: str, topic: str, isolation: str, timeout: float = 20.0) -> list[bytes]:
    """All values of partition 0 up to its end offset (the last stable offset under read_committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", isolation_level=isolation)
    await consumer.start()
    values: list[bytes] = []
    try:
        partition = AioTopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        deadline = time.monotonic() + timeout
        while await consumer.position(partition) < end and time.monotonic() < deadline:
            batch = await consumer.getmany(partition, timeout_ms=500)
            values.extend(record.value for record in batch.get(partition, []))
    finally:
        await consumer.stop()
    return values


# --- Kafka: confluent-kafka ------------------------------------------------------------------------


def test_confluent_produce_and_consume(stack, topic: str) -> None:
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "acks": "all",
                         "enable.idempotence": True})
    sent = [(f"cb-{i}".encode(), f"event {i}".encode()) for i in range(5)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0

    assert _consume_confluent(stack.bootstrap_servers, topic, expected=5) == sent


def test_confluent_transaction_commits(stack, topic: str) -> None:
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers, "transactional.id": _unique("tx-ck")})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"cb-1", value=b"charged")
    producer.commit_transaction(30)

    assert _consume_confluent(stack.bootstrap_servers, topic, expected=1) == [(b"cb-1", b"charged")]


# --- Kafka: aiokafka (what Faust runs on) ----------------------------------------------------------


def test_aiokafka_produce_and_consume(stack, topic: str) -> None:
    async def scenario() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(topic, key=b"cb-1", value=f"v{i}".encode())
        finally:
            await producer.stop()
        return await _consume_aiokafka(stack.bootstrap_servers, topic, "read_uncommitted")

    assert asyncio.run(scenario()) == [b"v0", b"v1", b"v2"]


def test_aiokafka_transactions_committed_seen_aborted_not(stack, topic: str) -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers,
                                    transactional_id=_unique("tx-aio"))
        await producer.start()
        try:
            await producer.begin_transaction()
            await producer.send_and_wait(topic, key=b"cb-1", value=b"aborted")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, key=b"cb-1", value=b"committed")
        finally:
            await producer.stop()
        committed = await _consume_aiokafka(stack.bootstrap_servers, topic, "read_committed")
        everything = await _consume_aiokafka(stack.bootstrap_servers, topic, "read_uncommitted")
        return committed, everything

    committed, everything = asyncio.run(scenario())
    assert committed == [b"committed"]
    # the aborted record really reached the log: only isolation hides it
    assert everything == [b"aborted", b"committed"]


# --- the topic catalogue ---------------------------------------------------------------------------


def test_catalogue_topics_exist_with_partitions(stack, admin: AdminClient) -> None:
    topics = admin.list_topics(timeout=10).topics
    for spec in CATALOGUE:
        assert spec.name in topics, f"{spec.name} missing"
        assert len(topics[spec.name].partitions) == spec.partitions, spec.name


def test_catalogue_topic_configs_on_broker(stack, admin: AdminClient) -> None:
    compacted = [*CONFIG_TOPICS, ACCOUNTS_BALANCES]
    resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in [*compacted, CDR_RATED]]
    configs = {r.name: f.result(timeout=10) for r, f in admin.describe_configs(resources).items()}
    for spec in compacted:
        assert configs[spec.name]["cleanup.policy"].value == "compact", spec.name
    assert configs[CDR_RATED.name]["cleanup.policy"].value == "delete"
    assert configs[CDR_RATED.name]["retention.ms"].value == str(CDR_RATED.retention_ms)


def test_apply_catalogue_creates_then_realigns_drift(stack, admin: AdminClient) -> None:
    name = _unique("test.catalogue")
    spec = TopicSpec(name, "test key", "tests.Model", 2, retention_ms=3_600_000)
    try:
        first = apply_catalogue(stack.bootstrap_servers, specs=[spec])
        assert first.created == [name]

        drifted = TopicSpec(name, "test key", "tests.Model", 3, retention_ms=7_200_000)
        second = apply_catalogue(stack.bootstrap_servers, specs=[drifted])
        assert second.created == []
        assert second.altered == {name: {"retention.ms": ("3600000", "7200000")}}
        assert second.partition_drift == {name: (2, 3)}  # reported, never changed
        resource = ConfigResource(ResourceType.TOPIC, name)
        described = admin.describe_configs([resource])[resource].result(timeout=10)
        assert described["retention.ms"].value == "7200000"

        third = apply_catalogue(stack.bootstrap_servers, specs=[drifted])
        assert third.unchanged == [name] and third.altered == {}
    finally:
        admin.delete_topics([name])[name].result(timeout=30)


# --- ClickHouse -------------------------------------------------------------------------------------


def test_clickhouse_write_and_read(stack) -> None:
    client = stack.clickhouse_client()
    table = f"callback.{_unique('test_roundtrip')}"
    try:
        # LowCardinality needs the server profile's allow_experimental_low_cardinality_type on 18.16
        client.execute(f"CREATE TABLE {table} (leg_id String, disposition LowCardinality(String), "
                       "billsec UInt32) ENGINE = MergeTree ORDER BY leg_id")
        client.execute(f"INSERT INTO {table} (leg_id, disposition, billsec) VALUES",
                       [("leg-1", "ANSWERED", 61), ("leg-2", "BUSY", 0)])
        rows = client.execute(f"SELECT leg_id, disposition, billsec FROM {table} ORDER BY leg_id")
        assert rows == [("leg-1", "ANSWERED", 61), ("leg-2", "BUSY", 0)]
    finally:
        client.execute(f"DROP TABLE IF EXISTS {table}")
        client.disconnect()


def test_stack_migrations_applied(stack) -> None:
    client = stack.clickhouse_client()
    try:
        assert client.execute("SELECT count() FROM system.databases WHERE name = 'callback'") == [(1,)]
        versions = client.execute("SELECT version FROM callback.schema_migrations")
        assert (1,) in versions
        # provisioning again applies nothing new
        assert apply_migrations(client) == []
    finally:
        client.disconnect()


def test_migration_applied_twice_runs_once(stack, tmp_path: Path) -> None:
    client = stack.clickhouse_client()
    ledger = f"callback.{_unique('test_migrations')}"
    data_table = f"callback.{_unique('test_migrated')}"
    (tmp_path / "0001_counter.sql").write_text(
        f"-- a table and a row: a second run would add a second row\n"
        f"CREATE TABLE IF NOT EXISTS {data_table} (n UInt8) ENGINE = MergeTree ORDER BY n;\n"
        f"INSERT INTO {data_table} (n) SELECT 1;\n")
    try:
        assert apply_migrations(client, tmp_path, table=ledger) == ["0001_counter"]
        assert apply_migrations(client, tmp_path, table=ledger) == []
        assert client.execute(f"SELECT count() FROM {ledger}") == [(1,)]
        assert client.execute(f"SELECT count() FROM {data_table}") == [(1,)]

        (tmp_path / "0002_more.sql").write_text(f"INSERT INTO {data_table} (n) SELECT 2;\n")
        assert apply_migrations(client, tmp_path, table=ledger) == ["0002_more"]

        (tmp_path / "0001_counter.sql").write_text("SELECT 1;\n")
        with pytest.raises(MigrationError, match="0001_counter.sql changed after it was applied"):
            apply_migrations(client, tmp_path, table=ledger)
    finally:
        client.execute(f"DROP TABLE IF EXISTS {ledger}")
        client.execute(f"DROP TABLE IF EXISTS {data_table}")
        client.disconnect()


# --- the launcher itself -------------------------------------------------------------------------------


def test_up_is_idempotent(stack) -> None:
    before = {s.name: s.pid for s in local_stack.status()}
    report = local_stack.up(provision=True)
    assert {s.name: s.action for s in report.services} == {"kafka": "already running",
                                                           "clickhouse": "already running"}
    assert {s.name: s.pid for s in report.services} == before
    assert report.topics.created == [] and report.migrations == []


def test_status_reports_versions_and_ports(stack) -> None:
    services = {s.name: s for s in local_stack.status()}
    assert services["kafka"].running and services["kafka"].answering
    assert services["kafka"].version == "3.9.1"
    assert services["kafka"].ports["Kafka broker"] == int(stack.bootstrap_servers.rsplit(":", 1)[1])
    assert services["clickhouse"].answering
    assert services["clickhouse"].version and services["clickhouse"].version.split(".")[0].isdigit()
    assert services["clickhouse"].ports["ClickHouse native"] == stack.clickhouse_port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_second_stack_up_then_down_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack of its own (other ports and folder) beside the session's: down stops all of it."""
    from callback.settings import get_settings

    ports = {"KAFKA_PORT": _free_port(), "KAFKA_CONTROLLER_PORT": _free_port(),
             "CLICKHOUSE_TCP_PORT": _free_port(), "CLICKHOUSE_HTTP_PORT": _free_port()}
    monkeypatch.setenv("CALLBACK_STACK__STATE_DIR", str(tmp_path / "stack"))
    for key, port in ports.items():
        monkeypatch.setenv(f"CALLBACK_STACK__{key}", str(port))
    get_settings.cache_clear()
    try:
        report = local_stack.up(provision=False)
        assert {s.name: s.action for s in report.services} == {"kafka": "started", "clickhouse": "started"}
        pids = [s.pid for s in report.services]
        assert all(pid and is_alive(pid) for pid in pids)

        stopped = local_stack.down()
        assert sorted(s.pid for s in stopped) == sorted(pids)
        for pid in pids:
            assert pid is not None and not is_alive(pid) and group_members(pid) == []
        assert all(port_is_free(port) for port in ports.values())
        assert list((tmp_path / "stack").glob("*/*.pid")) == []
        assert {s.action for s in local_stack.down()} == {"not running"}
    finally:
        local_stack.down()
        monkeypatch.undo()
        get_settings.cache_clear()
