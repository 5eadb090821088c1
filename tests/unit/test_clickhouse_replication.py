"""The pure parts of the replicated ClickHouse layout: the engine rewrite and statement routing of
``infra.migrate``, the replica configs and ports of ``infra.stack``, the settings' replica list, the
client's failover hosts and the sink's repeatable insert block (no server needed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callback.clickhouse_io import clickhouse_client
from callback.settings import ClickHouseSettings, StackSettings, get_settings
from infra import stack
from infra.migrate import (
    discover,
    distributed_statements,
    replicated_by_table,
    replicated_statement,
)
from infra.stack import StackError, StackLayout
from rating_stream.sink import SinkOptions, insert_block, insert_statement

# --- the engine rewrite ----------------------------------------------------------------------------


@pytest.mark.parametrize(("engine", "replicated"), [
    ("ReplacingMergeTree(version)",
     "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.t', '{replica}', version)"),
    ("ReplacingMergeTree()", "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db.t', '{replica}')"),
    ("MergeTree", "ReplicatedMergeTree('/clickhouse/tables/{shard}/db.t', '{replica}')"),
    ("SummingMergeTree((a, b))",
     "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db.t', '{replica}', (a, b))"),
    ("CollapsingMergeTree(sign)",
     "ReplicatedCollapsingMergeTree('/clickhouse/tables/{shard}/db.t', '{replica}', sign)"),
])
def test_merge_tree_engines_get_their_replicated_form(engine: str, replicated: str) -> None:
    ddl = f"CREATE TABLE IF NOT EXISTS db.t\n(\n    a UInt8\n)\nENGINE = {engine}\nORDER BY a"
    assert replicated_statement(ddl) == ddl.replace(f"ENGINE = {engine}", f"ENGINE = {replicated}")


@pytest.mark.parametrize("statement", [
    "CREATE DATABASE IF NOT EXISTS callback",
    "CREATE TABLE db.t (a UInt8) ENGINE = ReplicatedMergeTree('/x/db.t', '{replica}') ORDER BY a",
    "CREATE TABLE db.l (a UInt8) ENGINE = Log",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS db.v TO db.t AS SELECT a FROM db.src",
    "ALTER TABLE db.t ADD COLUMN b String",
    "DROP TABLE IF EXISTS db.t",
])
def test_other_statements_are_left_alone(statement: str) -> None:
    assert replicated_statement(statement) == statement


def test_a_replicated_table_must_name_its_database() -> None:
    with pytest.raises(ValueError, match="name the table with its database"):
        replicated_statement("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")


def test_every_shipped_table_becomes_replicated_and_nothing_else_changes() -> None:
    """Each MergeTree table of infra/migrations gets its own ZooKeeper path; views, the database
    and the ALTER are untouched."""
    paths = []
    for migration in discover():
        for statement in migration.statements():
            rewritten = replicated_statement(statement)
            if "MergeTree" in statement and statement.lstrip().upper().startswith("CREATE TABLE"):
                assert "ENGINE = Replicated" in rewritten, statement
                paths.append(rewritten.split("'/clickhouse/tables/{shard}/", 1)[1].split("'", 1)[0])
                # outside the engine clause the statement is the single-server one
                assert rewritten.split("ENGINE")[0] == statement.split("ENGINE")[0]
            else:
                assert rewritten == statement
    assert "callback.cdr" in paths and len(paths) == len(set(paths)) == 7


@pytest.mark.parametrize(("statement", "table"), [
    ("ALTER TABLE callback.cdr ADD COLUMN destination String AFTER matched_prefix", "callback.cdr"),
    ("INSERT INTO callback.hangup_causes (q850_cause) SELECT 1", "callback.hangup_causes"),
    ("OPTIMIZE TABLE callback.cdr FINAL", "callback.cdr"),
    ("TRUNCATE TABLE IF EXISTS `callback`.`t`", "callback.t"),
    ("CREATE TABLE callback.t (a UInt8) ENGINE = MergeTree ORDER BY a", None),
    ("DROP TABLE IF EXISTS callback.hangup_causes", None),
])
def test_statements_clickhouse_replicates_itself_run_once(statement: str, table: str | None) -> None:
    assert replicated_by_table(statement) == table


def test_distributed_table_is_recreated_as_the_source() -> None:
    assert distributed_statements("callback", "callback.cdr", "callback.cdr_all") == [
        "DROP TABLE IF EXISTS callback.cdr_all",
        "CREATE TABLE callback.cdr_all AS callback.cdr ENGINE = Distributed(callback, callback, cdr)",
    ]


# --- settings and the client -----------------------------------------------------------------------


def test_replica_addresses_are_host_then_alt_hosts() -> None:
    ch = ClickHouseSettings(host="ch1", port=9000, alt_hosts=" ch2:9000, 10.0.0.3:9001 ,")
    assert ch.replica_addresses() == [("ch1", 9000), ("ch2", 9000), ("10.0.0.3", 9001)]
    with pytest.raises(ValueError, match="'ch2' is not host:port"):
        ClickHouseSettings(alt_hosts="ch2").replica_addresses()


def test_cluster_and_alt_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_CLICKHOUSE__CLUSTER", "callback")
    monkeypatch.setenv("CALLBACK_CLICKHOUSE__ALT_HOSTS", "127.0.0.1:9001")
    monkeypatch.setenv("CALLBACK_STACK__CLICKHOUSE_REPLICAS", "2")
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert (settings.clickhouse.cluster, settings.clickhouse.alt_hosts) == ("callback", "127.0.0.1:9001")
        assert settings.stack.clickhouse_replicas == 2
    finally:
        get_settings.cache_clear()


def test_client_fails_over_in_the_order_of_the_settings() -> None:
    """clickhouse-driver keeps the hosts it tries, host:port first; nothing connects here."""
    client = clickhouse_client(ClickHouseSettings(host="ch1", port=9000, alt_hosts="ch2:9001,ch3:9002"))
    assert list(client.connection.hosts) == [("ch1", 9000), ("ch2", 9001), ("ch3", 9002)]
    alone = clickhouse_client(ClickHouseSettings(host="ch1", port=9000))
    assert list(alone.connection.hosts) == [("ch1", 9000)]


def test_a_sink_retry_sends_the_same_block() -> None:
    """inserted_at is the batch's stamp, not the server's now(): both attempts are one block, which
    a Replicated table deduplicates."""
    rows = [("leg-1", 1), ("leg-2", 2)]
    stamp = int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp())
    assert insert_block(rows, stamp) == insert_block(list(rows), stamp) == [
        ("leg-1", "leg-2"), (1, 2), [stamp, stamp]]
    stamped = SinkOptions(table="t", columns=("a", "b"))
    assert insert_statement(stamped) == "INSERT INTO t (a, b, inserted_at) VALUES"
    plain = SinkOptions(table="t", columns=("a",), stamp_inserted_at=False)
    assert insert_statement(plain) == "INSERT INTO t (a) VALUES"
    assert insert_block(rows, None) == [("leg-1", "leg-2"), (1, 2)]


# --- the local stack's replicas ---------------------------------------------------------------------


def _layout(tmp_path: Path, replicas: int) -> StackLayout:
    return StackLayout(StackSettings(state_dir=tmp_path / "st", kafka_port=31092, kafka_controller_port=31093,
                                     clickhouse_tcp_port=31000, clickhouse_http_port=31123,
                                     clickhouse_interserver_port=31009, zookeeper_port=31181,
                                     clickhouse_replicas=replicas))


def test_one_replica_keeps_todays_config_and_no_zookeeper(tmp_path: Path) -> None:
    lay = _layout(tmp_path, 1)
    configs = stack.clickhouse_configs(lay)
    assert sorted(configs) == ["config.xml", "users.xml"]
    assert "interserver" not in configs["config.xml"].split("-->", 1)[1]
    assert [p.label for p in lay.clickhouse_ports()] == ["ClickHouse native", "ClickHouse HTTP"]
    assert [svc.proc.name for svc in stack._services(lay)] == ["kafka", "clickhouse"]


def test_two_replicas_each_get_ports_folder_macros_and_the_cluster(tmp_path: Path) -> None:
    lay = _layout(tmp_path, 2)
    names = [svc.proc.name for svc in stack._services(lay)]
    assert names == ["kafka", "clickhouse", "zookeeper", "clickhouse-2"]
    assert [(p.label, p.number) for p in lay.clickhouse_replica_ports(2)] == [
        ("ClickHouse native", 31001), ("ClickHouse HTTP", 31124), ("ClickHouse interserver", 31010)]
    assert lay.clickhouse_replica_dir(1) == lay.clickhouse_dir
    for replica, interserver in ((1, 31009), (2, 31010)):
        configs = stack.clickhouse_configs(lay, replica)
        main = ET.fromstring(configs["config.xml"])
        assert main.findtext("tcp_port") == str(31000 + replica - 1)
        assert main.findtext("path") == f"{lay.clickhouse_replica_dir(replica)}/data/"
        extra = ET.fromstring(configs["config.d/replication.xml"])
        assert extra.findtext("interserver_http_port") == str(interserver)
        assert extra.findtext("interserver_http_host") == "127.0.0.1"
        assert extra.findtext("zookeeper/node/port") == "31181"
        macros = (extra.findtext("macros/shard"), extra.findtext("macros/replica"))
        assert macros == ("01", f"replica-{replica}")
        shard = extra.find("remote_servers/callback/shard")
        assert shard is not None and shard.findtext("internal_replication") == "true"
        assert [r.findtext("port") for r in shard.findall("replica")] == ["31000", "31001"]


def test_zookeeper_is_standalone_on_loopback_in_the_state_folder(tmp_path: Path) -> None:
    lay = _layout(tmp_path, 2)
    cfg = dict(line.split("=", 1) for line in stack.zookeeper_config(lay).splitlines() if "=" in line)
    assert cfg["clientPort"] == "31181" and cfg["clientPortAddress"] == "127.0.0.1"
    assert cfg["dataDir"] == str(lay.root / "zookeeper" / "data")
    assert cfg["admin.enableServer"] == "false" and "ruok" in cfg["4lw.commands.whitelist"]
    assert not any(key.startswith("server.") for key in cfg)  # no quorum: standalone


def test_busy_replica_port_names_the_setting_it_derives_from(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = StackSettings(state_dir=tmp_path, clickhouse_tcp_port=port - 1, clickhouse_replicas=2)
        lay = StackLayout(settings)
        with pytest.raises(StackError) as err:
            stack._check_ports_free(lay.clickhouse_replica_ports(2))
    assert str(err.value) == (f"port {port} (ClickHouse native) is busy: stop what listens there or set "
                              "CALLBACK_STACK__CLICKHOUSE_TCP_PORT (+1 for replica 2) to a free port")


def test_replica_ports_must_not_collide(tmp_path: Path) -> None:
    lay = StackLayout(StackSettings(state_dir=tmp_path, clickhouse_tcp_port=9008,
                                    clickhouse_interserver_port=9009, clickhouse_replicas=2))
    with pytest.raises(StackError, match="are both 9009"):
        stack._check_port_settings([p for svc in stack._services(lay) for p in svc.ports])


def test_replica_count_is_checked_and_kept_by_the_state_folder(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_STACK__STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("CALLBACK_STACK__CLICKHOUSE_REPLICAS", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(StackError, match=r"^ClickHouse replicas must be 1 or 2, not 3 \(--clickhouse"):
            stack._layout_for_up(3)
        assert stack._layout_for_up(2).settings.clickhouse_replicas == 2
        assert stack._layout_for_up(None).settings.clickhouse_replicas == 2  # recorded
        assert stack.layout().replicated  # status and down see both replicas
        assert not stack._layout_for_up(1).replicated  # no tables yet: the choice may still change
        stack._layout_for_up(2)
        (tmp_path / "st" / "clickhouse" / "data" / "metadata" / "callback").mkdir(parents=True)
        with pytest.raises(StackError, match="was set up with 2 ClickHouse replica"):
            stack._layout_for_up(1)
    finally:
        get_settings.cache_clear()


def test_a_state_folder_from_before_replicas_is_one_server(tmp_path: Path) -> None:
    assert stack.recorded_clickhouse_replicas(tmp_path) is None
    (tmp_path / "clickhouse" / "data" / "metadata" / "callback").mkdir(parents=True)
    assert stack.recorded_clickhouse_replicas(tmp_path) == 1


def test_stack_settings_point_clients_at_every_replica(tmp_path: Path) -> None:
    one = stack.stack_clickhouse_settings(_layout(tmp_path, 1))
    assert (one.port, one.cluster, one.alt_hosts) == (31000, "", "")
    two = stack.stack_clickhouse_settings(_layout(tmp_path, 2))
    assert (two.port, two.cluster, two.alt_hosts) == (31000, "callback", "127.0.0.1:31001")
