"""The stack launcher's pure parts and its process handling, without starting Kafka or ClickHouse.

Process tests use real ``sh``/``sleep`` processes: stopping by process group and escalating to
SIGKILL are exactly what a mock would hide.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from callback.settings import StackSettings
from infra import stack
from infra.migrate import MigrationError, discover, split_statements
from infra.process import ManagedProcess, group_members, is_alive, port_is_free, wait_until
from infra.stack import Port, StackError, StackLayout


def _layout(tmp_path: Path) -> StackLayout:
    return StackLayout(StackSettings(state_dir=tmp_path / "st", kafka_port=31092, kafka_controller_port=31093,
                                     clickhouse_tcp_port=31000, clickhouse_http_port=31123))


# --- configs --------------------------------------------------------------------------------------


def test_kafka_properties_single_node_on_loopback(tmp_path: Path) -> None:
    props = dict(line.split("=", 1) for line in stack.kafka_properties(_layout(tmp_path)).splitlines()
                 if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:31092,CONTROLLER://127.0.0.1:31093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:31093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path / "st" / "kafka" / "data")


def test_clickhouse_config_filled_and_confined_to_state_dir(tmp_path: Path) -> None:
    configs = stack.clickhouse_configs(_layout(tmp_path))
    config, users = configs["config.xml"], configs["users.xml"]
    assert "${" not in config and "${" not in users
    assert "<listen_host>127.0.0.1</listen_host>" in config and config.count("<listen_host>") == 1
    assert "<tcp_port>31000</tcp_port>" in config and "<http_port>31123</http_port>" in config
    assert "interserver_http_port" not in config
    state = str(tmp_path / "st" / "clickhouse")
    for tag in ("path", "tmp_path", "user_files_path", "users_config", "log", "errorlog"):
        value = config.split(f"<{tag}>", 1)[1].split("<", 1)[0]
        assert value.startswith(state), (tag, value)
    assert "<allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>" in users


def test_cluster_id_is_kafka_shaped() -> None:
    ids = {stack._new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


# --- ports ----------------------------------------------------------------------------------------


def test_busy_port_is_one_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        assert not port_is_free(busy)
        with pytest.raises(StackError) as error:
            stack._check_ports_free([Port("ClickHouse HTTP", busy, "CALLBACK_STACK__CLICKHOUSE_HTTP_PORT")])
    message = str(error.value)
    assert "\n" not in message
    assert f"port {busy} (ClickHouse HTTP) is busy" in message
    assert "CALLBACK_STACK__CLICKHOUSE_HTTP_PORT" in message
    assert port_is_free(busy)


def test_port_settings_must_be_valid_and_distinct() -> None:
    with pytest.raises(StackError, match="CALLBACK_STACK__KAFKA_PORT=99999 is not a TCP port"):
        stack._check_port_settings([Port("Kafka broker", 99999, "CALLBACK_STACK__KAFKA_PORT")])
    with pytest.raises(StackError, match="CLICKHOUSE_TCP_PORT and CALLBACK_STACK__KAFKA_PORT are both"):
        stack._check_port_settings([Port("Kafka broker", 9000, "CALLBACK_STACK__KAFKA_PORT"),
                                    Port("ClickHouse native", 9000, "CALLBACK_STACK__CLICKHOUSE_TCP_PORT")])
    stack._check_port_settings(stack.StackLayout(StackSettings()).kafka_ports())


# --- processes ------------------------------------------------------------------------------------


def test_managed_process_stops_whole_group(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker-config")
    proc = ManagedProcess("sleeper", tmp_path / "sleeper.pid", marker)
    # the shell forks a child; both must go, as a server's helpers would
    argv = ["sh", "-c", "sleep 60 & sleep 60; : " + marker]
    pid = proc.start(argv, cwd=tmp_path, output=tmp_path / "out.log")
    assert proc.running_pid() == pid
    assert wait_until(lambda: len(group_members(pid)) == 3, timeout=5)  # sh + two sleeps
    children = group_members(pid)
    assert proc.stop(timeout=5) == pid
    assert not any(is_alive(child) for child in children)
    assert not is_alive(pid) and group_members(pid) == []
    assert not proc.pid_file.exists()
    assert proc.stop() is None


def test_managed_process_sigkill_after_timeout(tmp_path: Path) -> None:
    marker = str(tmp_path / "stubborn")
    script = f"import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)  # {marker}"
    proc = ManagedProcess("stubborn", tmp_path / "stubborn.pid", marker)
    pid = proc.start([sys.executable, "-c", script], cwd=tmp_path, output=tmp_path / "out.log")
    assert proc.running_pid() == pid
    assert proc.stop(timeout=1.0) == pid
    assert not is_alive(pid)


def test_stale_pid_file_of_foreign_process_is_ignored(tmp_path: Path) -> None:
    """A pid file whose pid now belongs to another program must never lead to signalling it."""
    proc = ManagedProcess("kafka", tmp_path / "kafka.pid", str(tmp_path / "server.properties"))
    proc.pid_file.write_text("1\n")  # init: alive, but not ours
    assert proc.running_pid() is None
    assert not proc.pid_file.exists()
    assert proc.stop() is None


# --- migrations files -----------------------------------------------------------------------------


def test_split_statements_on_line_ending_semicolons() -> None:
    sql = "-- header\nCREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory;\n\n-- only a comment;\n" \
          "ALTER TABLE a ADD COLUMN n UInt8 ;\n"
    assert split_statements(sql) == ["CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory",
                                     "ALTER TABLE a ADD COLUMN n UInt8"]


def test_discover_orders_and_rejects_bad_names(tmp_path: Path) -> None:
    (tmp_path / "0002_b.sql").write_text("SELECT 2;\n")
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\n")
    assert [m.label for m in discover(tmp_path)] == ["0001_a", "0002_b"]
    (tmp_path / "0002_dup.sql").write_text("SELECT 3;\n")
    with pytest.raises(MigrationError, match="version 0002"):
        discover(tmp_path)
    (tmp_path / "0002_dup.sql").unlink()
    (tmp_path / "3_bad.sql").write_text("SELECT 3;\n")
    with pytest.raises(MigrationError, match="NNNN_lowercase_name"):
        discover(tmp_path)


def test_inline_insert_values_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_seed.sql").write_text("INSERT INTO callback.t (a, b) VALUES (1, 2);\n")
    (migration,) = discover(tmp_path)
    with pytest.raises(MigrationError, match="INSERT INTO ... SELECT"):
        migration.statements()
    (tmp_path / "0001_seed.sql").write_text("INSERT INTO callback.t (a, b) SELECT 1, 2;\n")
    (migration,) = discover(tmp_path)
    assert migration.statements() == ["INSERT INTO callback.t (a, b) SELECT 1, 2"]


def test_shipped_migrations_are_well_formed() -> None:
    migrations = discover()
    assert migrations[0].label == "0001_database"
    for migration in migrations:
        assert migration.statements(), migration.label
