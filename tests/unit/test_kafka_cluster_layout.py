"""The local Kafka cluster's pure parts (``callback stack up --brokers 3``): node layout and ports,
each node's config, the broker count a state folder keeps, and how topics choose their replication.
No server is started; ``tests/integration/test_kafka_cluster.py`` runs the real cluster."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callback.settings import StackSettings
from infra import stack
from infra.stack import Port, StackError, StackLayout
from infra.topics import CatalogueReport, _min_insync_change
from schemas.topics import Replication

REPO = Path(__file__).resolve().parents[2]


def _layout(tmp_path: Path, brokers: int = 3, **ports: int) -> StackLayout:
    values = {"kafka_port": 31092, "kafka_controller_port": 31093, "clickhouse_tcp_port": 31000,
              "clickhouse_http_port": 31123} | ports
    return StackLayout(StackSettings(state_dir=tmp_path / "st", brokers=brokers, **values))


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


# --- replication ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("brokers", "factor", "min_isr"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (7, 3, 2)])
def test_replication_follows_the_broker_count(brokers: int, factor: int, min_isr: int) -> None:
    assert Replication.for_brokers(brokers) == Replication(factor, min_isr)


def test_min_insync_replicas_leaves_one_copy_to_lose() -> None:
    assert [Replication.for_factor(f).min_insync_replicas for f in (1, 2, 3, 5)] == [1, 1, 2, 2]
    with pytest.raises(ValueError):
        Replication.for_factor(0)


def test_existing_topics_get_min_insync_raised_never_lowered_nor_to_their_replica_count() -> None:
    cluster = Replication(3, 2)
    assert _min_insync_change("1", cluster, topic_factor=3) == "2"
    assert _min_insync_change("2", cluster, topic_factor=3) is None
    assert _min_insync_change("3", cluster, topic_factor=5) is None  # an operator's stricter choice
    # a topic made on one broker keeps accepting acks=all writes: 2 of its 1 (or 2) copies never could
    assert _min_insync_change("1", cluster, topic_factor=1) is None
    assert _min_insync_change("1", cluster, topic_factor=2) is None
    assert _min_insync_change(None, Replication(1, 1), topic_factor=1) is None


def test_catalogue_report_says_what_it_used() -> None:
    report = CatalogueReport(replication=Replication(3, 2), brokers=3, replication_drift={"a.b": (1, 3)})
    assert report.replication_line() == ("replication factor 3, min.insync.replicas 2 "
                                         "(3 brokers in the cluster)")
    assert report.summary().endswith("; fewer than 3 replicas: a.b has 1")
    single = CatalogueReport(brokers=1)
    assert single.replication_line() == ("replication factor 1, min.insync.replicas 1 "
                                         "(1 broker in the cluster)")


# --- nodes and ports ----------------------------------------------------------------------------------


def test_single_broker_keeps_its_names_and_ports(tmp_path: Path) -> None:
    (node,) = _layout(tmp_path, brokers=1).kafka_nodes()
    assert (node.node_id, node.name, node.dir) == (1, "kafka", tmp_path / "st" / "kafka")
    assert node.ports() == [Port("Kafka broker", 31092, "CALLBACK_STACK__KAFKA_PORT"),
                            Port("Kafka controller", 31093, "CALLBACK_STACK__KAFKA_CONTROLLER_PORT")]
    assert _layout(tmp_path, brokers=1).kafka_bootstrap == "127.0.0.1:31092"


def test_cluster_nodes_step_their_ports_by_two(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    nodes = lay.kafka_nodes()
    assert [n.name for n in nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert [n.dir for n in nodes] == [tmp_path / "st" / f"kafka-{i}" for i in (1, 2, 3)]
    assert [(n.broker.number, n.controller.number) for n in nodes] == [(31092, 31093), (31094, 31095),
                                                                       (31096, 31097)]
    assert nodes[2].broker.setting == "CALLBACK_STACK__KAFKA_PORT + 4"
    assert lay.kafka_bootstrap == "127.0.0.1:31092,127.0.0.1:31094,127.0.0.1:31096"
    assert lay.kafka_process().name == "kafka-1" and lay.kafka_dir == tmp_path / "st" / "kafka-1"
    assert len({n.process().marker for n in nodes}) == 3  # each pid is recognised as its own node


def test_derived_ports_that_collide_name_both_settings(tmp_path: Path) -> None:
    lay = _layout(tmp_path, kafka_controller_port=31094)  # node 2's broker port
    with pytest.raises(StackError, match=r"CALLBACK_STACK__KAFKA_PORT \+ 2 and "
                                         r"CALLBACK_STACK__KAFKA_CONTROLLER_PORT are both 31094"):
        stack._check_port_settings(lay.kafka_ports())
    with pytest.raises(StackError, match=r"CALLBACK_STACK__KAFKA_PORT \+ 4 = 65537 is not a TCP port"):
        high = _layout(tmp_path, kafka_port=65533, kafka_controller_port=1000)
        stack._check_port_settings(high.kafka_ports())


def test_busy_port_of_a_derived_node_names_the_setting_to_move() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        port = Port("Kafka broker 3", busy, "CALLBACK_STACK__KAFKA_PORT", 4)
        with pytest.raises(StackError) as error:
            stack._check_ports_free([port])
    assert str(error.value) == (f"port {busy} (Kafka broker 3, CALLBACK_STACK__KAFKA_PORT + 4) is busy: stop "
                                "what listens there or set CALLBACK_STACK__KAFKA_PORT to another port")


# --- configs ----------------------------------------------------------------------------------------


def test_each_cluster_node_is_a_voter_with_replicated_internal_topics(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    props = _props(stack.kafka_properties(lay, lay.kafka_node(2)))
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:31093,2@127.0.0.1:31095,3@127.0.0.1:31097"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:31094,CONTROLLER://127.0.0.1:31095"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:31094"
    assert props["log.dirs"] == str(tmp_path / "st" / "kafka-2" / "data")
    assert {key: props[key] for key in ("offsets.topic.replication.factor", "default.replication.factor",
                                        "transaction.state.log.replication.factor")} == dict.fromkeys(
        ("offsets.topic.replication.factor", "default.replication.factor",
         "transaction.state.log.replication.factor"), "3")
    assert props["transaction.state.log.min.isr"] == props["min.insync.replicas"] == "2"
    assert props["broker.session.timeout.ms"] == "4000"
    assert str(lay.kafka_node(2).dir / "server.log") in stack.kafka_log4j(lay, lay.kafka_node(2))


def test_single_broker_config_is_what_it_always_was(tmp_path: Path) -> None:
    props = _props(stack.kafka_properties(_layout(tmp_path, brokers=1)))
    assert props["node.id"] == "1" and props["controller.quorum.voters"] == "1@127.0.0.1:31093"
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
                "min.insync.replicas"):
        assert props[key] == "1", key
    assert "broker.session.timeout.ms" not in props and "broker.heartbeat.interval.ms" not in props


# --- the broker count a state folder keeps -------------------------------------------------------------


def test_broker_count_must_be_supported(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"^2 brokers: the local stack runs 1 broker or a cluster of 3"):
        stack._check_broker_count(_layout(tmp_path, brokers=2))


def test_a_formatted_folder_refuses_another_broker_count_in_one_line(tmp_path: Path) -> None:
    lay = _layout(tmp_path, brokers=1)
    stack._check_broker_count(lay)  # nothing formatted yet: any supported count
    lay.root.mkdir(parents=True)
    lay.brokers_file.write_text(json.dumps({"brokers": 3}))
    assert stack.recorded_brokers(lay) == 3
    with pytest.raises(StackError) as error:
        stack._check_broker_count(lay)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"the stack in {lay.root} was formatted with 3 brokers, not 1: "
                              "run `callback stack up --brokers 3`")
    stack._check_broker_count(_layout(tmp_path, brokers=3))


def test_a_damaged_broker_count_is_one_line(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    lay.root.mkdir(parents=True)
    lay.brokers_file.write_text("{")
    with pytest.raises(StackError, match=r"kafka-brokers.json does not say how many brokers"):
        stack.recorded_brokers(lay)


def test_a_folder_formatted_before_counts_were_recorded_holds_one_broker(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    assert stack.recorded_brokers(lay) is None
    (lay.root / "kafka" / "data").mkdir(parents=True)
    (lay.root / "kafka" / "data" / "meta.properties").write_text("cluster.id=x\n")
    assert stack.recorded_brokers(lay) == 1
    with pytest.raises(StackError, match="was formatted with 1 broker, not 3"):
        stack._check_broker_count(lay)


def test_cluster_nodes_share_the_cluster_id_of_the_first_formatted(tmp_path: Path) -> None:
    lay = _layout(tmp_path)
    fresh = stack._cluster_id(lay)
    assert len(fresh) == 22
    meta = lay.kafka_node(2).dir / "data" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("#\nnode.id=2\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\nversion=1\n")
    assert stack._cluster_id(lay) == "AbCdEfGhIjKlMnOpQrStUv"


def test_stack_up_with_an_unsupported_broker_count_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "CALLBACK_STACK__STATE_DIR": str(tmp_path / "st")}
    result = subprocess.run([sys.executable, "-m", "callback.cli", "stack", "up", "--brokers", "2"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "error: 2 brokers: the local stack runs 1 broker or a cluster of 3 "
        "(--brokers / CALLBACK_STACK__BROKERS)"]
    assert not (tmp_path / "st").exists()


# --- producers ------------------------------------------------------------------------------------------

_SOURCES = {path.relative_to(REPO).as_posix(): path.read_text()
            for folder in ("callback", "producers", "processors", "rating_stream", "infra")
            for path in (REPO / folder).rglob("*.py")}


def test_every_producer_waits_for_all_in_sync_replicas() -> None:
    """min.insync.replicas=2 protects a write only from a producer that asks for acks=all: the one
    producer config sets it and nothing overrides it; Faust's producer is told -1 (all)."""
    from callback.kafka_io import producer_config

    assert producer_config("txn", **{"linger.ms": 1})["acks"] == "all"
    setting_acks = sorted(name for name, text in _SOURCES.items() if re.search(r"[\"']acks[\"']\s*:", text))
    assert setting_acks == ["callback/kafka_io.py"]
    faust_acks = {name: re.findall(r"producer_acks=(-?\d+)", text) for name, text in _SOURCES.items()}
    assert {name: acks for name, acks in faust_acks.items() if acks} == {
        "processors/app.py": ["-1"], "processors/bench_bare.py": ["-1"]}


def test_kafka_extra_tunes_a_producer_but_cannot_loosen_its_guarantees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A carrier's ``kafka.extra`` reaches every producer (its own compression, say), but acks,
    idempotence and the partitioner stay what exactly-once and the keys' partitions rely on."""
    from callback.kafka_io import PRODUCER_TUNABLES, producer_config
    from callback.settings import get_settings

    assert producer_config("txn")["compression.type"] == PRODUCER_TUNABLES["compression.type"] != "zstd"
    monkeypatch.setenv("CALLBACK_KAFKA__EXTRA", '{"compression.type": "zstd", "acks": "1", '
                       '"enable.idempotence": "false", "partitioner": "consistent"}')
    get_settings.cache_clear()
    try:
        conf = producer_config("txn")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert conf["compression.type"] == "zstd"
    assert (conf["acks"], conf["enable.idempotence"], conf["partitioner"]) == ("all", True, "murmur2_random")


def test_faust_declares_no_topic_of_its_own() -> None:
    """Faust would create topics with its topic_replication_factor (1); it creates none, so every
    topic's replication comes from the catalogue (or BROKER_DEFAULT_RF)."""
    for name, text in _SOURCES.items():
        assert text.count("faust.App(") == text.count("topic_allow_declare=False"), name
    assert _SOURCES["processors/app.py"].count("faust.App(") == 1


@pytest.fixture
def state_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings of a stack in ``tmp_path/st`` that name no broker count (as a plain shell would)."""
    from callback.settings import get_settings

    monkeypatch.setenv("CALLBACK_STACK__STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("CALLBACK_STACK__BROKERS", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_plain_stack_up_takes_the_count_the_folder_holds(tmp_path: Path, state_settings) -> None:
    from callback.settings import get_settings

    assert stack.requested_layout().brokers == 1  # a new folder
    assert stack.requested_layout(3).brokers == 3
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "kafka-brokers.json").write_text('{"brokers": 3}')
    assert stack.requested_layout().brokers == 3
    assert stack.existing_layout().brokers == 3
    state_settings.setenv("CALLBACK_STACK__BROKERS", "1")  # a count asked for is checked, not replaced
    get_settings.cache_clear()
    assert stack.requested_layout().brokers == 1
    with pytest.raises(StackError, match="formatted with 3 brokers, not 1"):
        stack._check_broker_count(stack.requested_layout())
