"""The local 3-node Kafka cluster (``callback stack up --brokers 3``) against real brokers.

A stack of its own (ports 25042-25051, a temporary state folder; not the session's ``stack``) is
brought up with three brokers: every node answers, the catalogue has three replicas and
``min.insync.replicas=2``, and the pipeline's own client configs (``callback.kafka_io``: acks=all,
idempotence, transactions, read_committed) work on it. Then the node leading the partition we
write to is SIGKILLed: a transaction still commits and a consumer group still reads and commits,
with two brokers left. ``up`` brings the node back, and ``down`` stops every process and frees
every port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from callback.kafka_io import BROKER_DEFAULT_RF, consumer_config, producer_config
from callback.settings import get_settings
from infra import stack as local_stack
from infra.process import group_members, is_alive, port_is_free, wait_until
from infra.topics import wait_for_leaders
from schemas.topics import CALLBACK_LEGS, CATALOGUE, Replication

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: node n's Kafka ports are these + 2 (n - 1): 25042-25047; ClickHouse 25050 / 25051
PORTS = {"KAFKA_PORT": 25042, "KAFKA_CONTROLLER_PORT": 25043,
         "CLICKHOUSE_TCP_PORT": 25050, "CLICKHOUSE_HTTP_PORT": 25051}
KAFKA_PORTS = range(25042, 25048)
TOPIC = CALLBACK_LEGS.name
REPO_ROOT = Path(__file__).resolve().parents[2]
GROUP = f"test-cluster-{uuid.uuid4().hex[:8]}"
TXN_ID = f"test-cluster-txn-{uuid.uuid4().hex[:8]}"


@dataclass
class Cluster:
    bootstrap: str
    up: local_stack.UpReport
    #: the node SIGKILLed by test_one_node_down (None before)
    killed: int | None = None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three brokers (and a ClickHouse) of their own, started by ``infra.stack.up``, always stopped."""
    state = tmp_path_factory.mktemp("kafka-cluster") / "stack"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CALLBACK_STACK__STATE_DIR", str(state))
        env.setenv("CALLBACK_STACK__BROKERS", "3")
        for key, port in PORTS.items():
            env.setenv(f"CALLBACK_STACK__{key}", str(port))
        get_settings.cache_clear()
        try:
            report = local_stack.up(provision=True)
            yield Cluster(local_stack.layout().kafka_bootstrap, report)
        finally:
            local_stack.down()
            get_settings.cache_clear()
    get_settings.cache_clear()  # the session's settings again, for the modules after this one


def _producer(cluster: Cluster) -> Producer:
    """The pipeline's transactional producer config (acks=all, idempotent), on this cluster."""
    producer = Producer(producer_config(TXN_ID, **{"bootstrap.servers": cluster.bootstrap}))
    producer.init_transactions(60)
    return producer


def _commit(producer: Producer, values: list[bytes], abort_first: bool = False) -> None:
    if abort_first:
        producer.begin_transaction()
        producer.produce(TOPIC, value=b"aborted", key=b"cb", partition=0)
        producer.abort_transaction(60)
    producer.begin_transaction()
    for value in values:
        producer.produce(TOPIC, value=value, key=b"cb", partition=0)
    producer.commit_transaction(60)


def _read_as_group(cluster: Cluster, expected: int, timeout_s: float = 60.0) -> list[bytes]:
    """What the group has not read yet on partition 0 (read_committed), offsets committed after."""
    consumer = Consumer(consumer_config(GROUP, **{"bootstrap.servers": cluster.bootstrap}))
    consumer.assign([TopicPartition(TOPIC, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or (message.error() and message.error().code() == KafkaError._PARTITION_EOF):
                continue
            assert message.error() is None, message.error()
            values.append(message.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def _leader(admin: AdminClient, topic: str, partition: int) -> int:
    return admin.list_topics(topic, timeout=30).topics[topic].partitions[partition].leader


def test_every_node_runs_and_answers(cluster: Cluster) -> None:
    nodes = [s for s in cluster.up.services if s.name.startswith("kafka")]
    assert [(s.name, s.action) for s in nodes] == [("kafka-1", "started"), ("kafka-2", "started"),
                                                   ("kafka-3", "started")]
    assert cluster.bootstrap == "127.0.0.1:25042,127.0.0.1:25044,127.0.0.1:25046"
    status = {s.name: s for s in local_stack.status()}
    for node_id, name in enumerate(("kafka-1", "kafka-2", "kafka-3"), start=1):
        assert status[name].running and status[name].answering, name
        assert status[name].ports[f"Kafka broker {node_id}"] == 25042 + 2 * (node_id - 1)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    assert set(admin.list_topics(timeout=30).brokers) == {1, 2, 3}


def test_catalogue_has_three_replicas_and_min_insync_two(cluster: Cluster) -> None:
    assert cluster.up.topics.replication == Replication(3, 2) and cluster.up.topics.brokers == 3
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topics = admin.list_topics(timeout=30).topics
    for name in [spec.name for spec in CATALOGUE] + ["__consumer_offsets", "__transaction_state"]:
        assert name in topics, name
        assert {len(p.replicas) for p in topics[name].partitions.values()} == {3}, name
    resources = [ConfigResource(ResourceType.TOPIC, spec.name) for spec in CATALOGUE]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result(timeout=30)["min.insync.replicas"].value == "2", resource.name


def test_topics_outside_the_catalogue_take_the_brokers_replication(cluster: Cluster) -> None:
    """Benchmarks and test rigs create topics with BROKER_DEFAULT_RF: one replica would refuse
    every acks=all write under the cluster's min.insync.replicas=2."""
    name = f"test.cluster.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(name, 1, BROKER_DEFAULT_RF)])[name].result(timeout=30)
    wait_for_leaders(admin, [name])
    assert len(admin.list_topics(name, timeout=30).topics[name].partitions[0].replicas) == 3
    producer = Producer(producer_config(**{"bootstrap.servers": cluster.bootstrap}))
    errors: list[KafkaError | None] = []
    producer.produce(name, value=b"stored on three", on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0 and errors == [None]


def test_transaction_and_read_committed_group_on_three_nodes(cluster: Cluster) -> None:
    producer = _producer(cluster)
    _commit(producer, [b"before-1", b"before-2"], abort_first=True)
    assert _read_as_group(cluster, expected=2) == [b"before-1", b"before-2"]


def _callback(*args: str) -> subprocess.CompletedProcess[str]:
    """A ``callback`` command in this module's environment (the cluster's state folder and ports)."""
    return subprocess.run([sys.executable, "-m", "callback.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=dict(os.environ), timeout=120, check=False)


def test_cli_lists_every_node_and_refuses_another_broker_count(cluster: Cluster) -> None:
    status = _callback("stack", "status")
    assert status.returncode == 0, status.stderr
    for node_id in (1, 2, 3):
        port = 25042 + 2 * (node_id - 1)
        line = rf"^kafka-{node_id} +answering +Kafka 3\.9\.1 +pid \d+ .*Kafka broker {node_id} {port},"
        assert re.search(line, status.stdout, re.MULTILINE), status.stdout
    assert f"node 1 of 3, bootstrap {cluster.bootstrap}" in status.stdout

    single = _callback("stack", "up", "--brokers", "1")
    assert single.returncode == 1
    state = local_stack.layout().root
    assert [line for line in single.stderr.splitlines() if line.strip()] == [
        f"error: the stack in {state} was formatted with 3 brokers, not 1: run `callback stack up "
        f"--brokers 3`, or run `callback stack down` and remove {state} to start afresh with 1 broker"]


def test_one_node_down_transactions_and_group_go_on(cluster: Cluster) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    victim = _leader(admin, TOPIC, 0)
    pid = {s.name: s.pid for s in local_stack.status(check=False)}[f"kafka-{victim}"]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    cluster.killed = victim
    assert wait_until(lambda: not is_alive(pid), 10)

    # the pipeline's transactional producer (acks=all) commits with two of three replicas in sync
    started = time.monotonic()
    _commit(_producer(cluster), [b"after-1", b"after-2"], abort_first=True)
    # and the group picks up where it committed, on a coordinator that may have moved
    assert _read_as_group(cluster, expected=2) == [b"after-1", b"after-2"]
    assert time.monotonic() - started < 60
    assert wait_until(lambda: _leader(admin, TOPIC, 0) not in (-1, victim), 30)
    status = {s.name: s for s in local_stack.status()}
    assert not status[f"kafka-{victim}"].running
    assert all(status[f"kafka-{n}"].answering for n in (1, 2, 3) if n != victim)


def test_up_brings_the_killed_node_back(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain ``up``, naming no broker count, starts the cluster the state folder holds."""
    assert cluster.killed is not None
    monkeypatch.delenv("CALLBACK_STACK__BROKERS")
    get_settings.cache_clear()
    report = local_stack.up(provision=False)
    get_settings.cache_clear()  # the module's settings again once monkeypatch restores the count
    actions = {s.name: s.action for s in report.services}
    assert actions.pop(f"kafka-{cluster.killed}") == "started"
    assert set(actions.values()) == {"already running"}
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    # the node answers as soon as it is registered; the other nodes' metadata learn of it a moment later
    assert wait_until(lambda: set(admin.list_topics(timeout=30).brokers) == {1, 2, 3}, 30)


def test_down_stops_every_node_and_frees_the_ports(cluster: Cluster) -> None:
    pids = [s.pid for s in local_stack.status(check=False)]
    assert len(pids) == 4 and all(pids)
    stopped = local_stack.down()
    assert sorted(s.pid for s in stopped) == sorted(pids)
    for pid in pids:
        assert pid is not None and not is_alive(pid) and group_members(pid) == []
    ports = [*KAFKA_PORTS, *PORTS.values()]
    # a node killed after its SIGTERM grace (a KRaft broker whose quorum left first) may take a
    # moment to release its sockets; a port still held after that names its holder
    if not wait_until(lambda: all(port_is_free(port) for port in ports), 10):
        busy = [port for port in ports if not port_is_free(port)]
        holders = subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout
        pytest.fail(f"ports still busy after down: {busy}\n" + "\n".join(
            line for line in holders.splitlines() if any(f":{port} " in line for port in busy)))
    assert [s.running for s in local_stack.status(check=False)] == [False] * 4
