"""Replicated ClickHouse on the local stack, against real servers: ZooKeeper and two ClickHouse
18.16 replicas started by ``callback stack up --clickhouse-replicas 2``.

The module runs its OWN stack (own state folder, ports 26000-26199 by default, or from
CALLBACK_TEST_REPLICAS_PORT_BASE), not the session's ``stack`` fixture: the session stack is a single
server, and this one has a replica killed on purpose. It checks, in order: a busy port is one line;
``up`` starts every member and ``status`` shows them; every table of the migrations is Replicated on
both replicas with per-replica bookkeeping and the Distributed ``cdr_all``; a block inserted twice
(a sink retry, also on the other replica) is stored once and reaches the other replica with the
materialized views' rows; a client with alt_hosts keeps inserting and reading through replica 2
once replica 1 is SIGKILLed; ``down`` frees every port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callback.clickhouse_io import clickhouse_client
from callback.settings import ClickHouseSettings
from infra.process import port_accepts, port_is_free, wait_until
from rating_stream.cdr import cdr_json, cdr_row
from rating_stream.engine import CompiledTariff, quote
from rating_stream.loadgen import make_legs, tariffs
from rating_stream.sink import SinkOptions, insert_block, insert_statement
from rating_stream.wire import from_model
from schemas.callback import PayerKind

pytestmark = pytest.mark.integration

BASE = int(os.environ.get("CALLBACK_TEST_REPLICAS_PORT_BASE", "26000"))
PORTS = {
    "CALLBACK_STACK__KAFKA_PORT": BASE + 92,
    "CALLBACK_STACK__KAFKA_CONTROLLER_PORT": BASE + 93,
    "CALLBACK_STACK__CLICKHOUSE_TCP_PORT": BASE,  # replica 2: BASE + 1
    "CALLBACK_STACK__CLICKHOUSE_HTTP_PORT": BASE + 123,  # replica 2: BASE + 124
    "CALLBACK_STACK__CLICKHOUSE_INTERSERVER_PORT": BASE + 9,  # replica 2: BASE + 10
    "CALLBACK_STACK__ZOOKEEPER_PORT": BASE + 181,
}
ALL_PORTS = [*PORTS.values(), BASE + 1, BASE + 124, BASE + 10]
REPLICA_PORTS = (BASE, BASE + 1)
#: the tables a cdr insert fills: cdr and the materialized views' targets (0003_cdr_analytics.sql)
CDR_TABLES = ("cdr", "revenue_by_payer_daily", "revenue_by_prefix_daily", "revenue_by_did_daily",
              "callback_outcomes_daily", "cdr_versions")
CALLBACK = str(Path(sys.executable).with_name("callback"))


@dataclass(frozen=True)
class Replicated:
    state_dir: Path
    env: dict[str, str]
    up_output: str

    def callback(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CALLBACK, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def replica(self, n: int):  # -> clickhouse_driver.Client of replica n alone
        return clickhouse_client(ClickHouseSettings(host="127.0.0.1", port=REPLICA_PORTS[n - 1]))


def _env(state_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CALLBACK_STACK__")}
    env.update({key: str(port) for key, port in PORTS.items()})
    env["CALLBACK_STACK__STATE_DIR"] = str(state_dir)
    return env


def test_a_busy_replica_port_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    replica2 = BASE + 1
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", replica2))
        sock.listen()
        done = Replicated(tmp_path, _env(tmp_path), "").callback("stack", "up", "--clickhouse-replicas", "2")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: port {replica2} (ClickHouse native) is busy: stop what listens there or set "
        "CALLBACK_STACK__CLICKHOUSE_TCP_PORT (+1 for replica 2) to a free port")
    assert all(port_is_free(port) for port in ALL_PORTS)


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicated]:
    """The module's own 2-replica stack; stopped at the end, and then no port of it is left open."""
    state_dir = tmp_path_factory.mktemp("replicated-stack")
    stack = Replicated(state_dir, _env(state_dir), "")
    busy = [port for port in ALL_PORTS if not port_is_free(port)]
    if busy:
        pytest.fail(f"ports {busy} are busy: set CALLBACK_TEST_REPLICAS_PORT_BASE to a free range")
    try:
        started = stack.callback("stack", "up", "--clickhouse-replicas", "2")
        assert started.returncode == 0, started.stderr[-2000:]
        yield Replicated(state_dir, stack.env, started.stdout)
    finally:
        stopped = stack.callback("stack", "down")
        assert stopped.returncode == 0, stopped.stderr[-2000:]
        assert wait_until(lambda: all(port_is_free(port) for port in ALL_PORTS), 30), \
            [port for port in ALL_PORTS if not port_is_free(port)]


def test_up_starts_zookeeper_and_both_replicas_and_status_shows_every_member(replicated: Replicated) -> None:
    started = {line.split()[0]: line for line in replicated.up_output.splitlines() if line.strip()}
    for member in ("kafka", "clickhouse", "clickhouse-2", "zookeeper"):
        assert "started" in started[member], replicated.up_output
    assert f"ClickHouse native {BASE + 1}" in started["clickhouse-2"]
    assert f"ZooKeeper client {BASE + 181}" in started["zookeeper"]

    status = replicated.callback("stack", "status")
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line and not line[0].isspace()}
    assert set(lines) == {"kafka", "clickhouse", "clickhouse-2", "zookeeper"}
    assert all("answering" in line for line in lines.values()), status.stdout
    assert "replica-2 of cluster callback" in status.stdout

    # up again, without the option: the folder's choice, every member already running, migrations done
    again = replicated.callback("stack", "up")
    assert again.returncode == 0, again.stderr[-2000:]
    not_members = ("topics", "migrations", "ready", "bootstrap")
    members = [line.split()[:3] for line in again.stdout.splitlines()
               if line and not line[0].isspace() and line.split()[0] not in not_members]
    assert [m[0] for m in members] == ["kafka", "clickhouse", "clickhouse-2", "zookeeper"]
    assert all(m[1:] == ["already", "running"] for m in members), again.stdout
    assert "migrations   up to date" in again.stdout

    # the folder keeps its layout: one line, nothing changed
    other = replicated.callback("stack", "up", "--clickhouse-replicas", "1")
    assert other.returncode == 1 and "was set up with 2 ClickHouse replica(s), not 1" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_every_table_is_replicated_on_both_replicas_with_their_own_bookkeeping(
        replicated: Replicated) -> None:
    for n in (1, 2):
        client = replicated.replica(n)
        engines = dict(client.execute("SELECT name, engine FROM system.tables WHERE database = 'callback'"))
        for table in (*CDR_TABLES, "hangup_causes"):
            assert engines[table].startswith("Replicated"), (n, table, engines[table])
        assert engines["schema_migrations"] == "MergeTree"  # what was applied on this replica
        assert engines["cdr_all"] == "Distributed"
        versions = client.execute("SELECT version FROM callback.schema_migrations ORDER BY version")
        assert [v for (v,) in versions] == [1, 2, 3, 4, 5]
        # 0004's INSERT ran once, and replica 2 got the rows by replication, not twice
        assert client.execute("SELECT count() FROM callback.hangup_causes")[0][0] == 72
        # 0005's ALTER ran once and reached both, and cdr_all has the column too
        for table in ("cdr", "cdr_all"):
            assert client.execute("SELECT count() FROM system.columns WHERE database = 'callback' AND "
                                  f"table = '{table}' AND name = 'destination'")[0][0] == 1
        client.disconnect()

    env = replicated.env | {"CALLBACK_CLICKHOUSE__HOST": "127.0.0.1", "CALLBACK_CLICKHOUSE__PORT": str(BASE),
                            "CALLBACK_CLICKHOUSE__CLUSTER": "callback",
                            "CALLBACK_CLICKHOUSE__ALT_HOSTS": f"127.0.0.1:{BASE + 1}"}
    again = subprocess.run([CALLBACK, "migrate"], env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert (again.returncode, again.stdout.strip()) == (0, "migrations up to date"), again.stderr


def _cdr_rows(run: str, n: int) -> list[tuple]:
    """``n`` rated CDRs as the sink reads them from cdr.rated (``cdr_row``)."""
    compiled = {t.tariff_id: CompiledTariff.build(t) for t in tariffs(run)}
    rows = []
    for leg in make_legs(run, n):
        tariff = compiled[f"{run}-origins" if leg.payer.kind is PayerKind.CALLBACK_USER else f"{run}-retail"]
        value = cdr_json(from_model(leg), quote(tariff, leg.dst, 0, answered=False), version=1,
                         rated_at=datetime.now(UTC), source="test")
        rows.append(cdr_row(value))
    return rows


def _counts(client, leg_ids: list[str], final: bool = False) -> dict[str, int]:
    """Rows of these legs in each table a cdr insert fills (without FINAL: what is stored)."""
    return {table: client.execute(f"SELECT count() FROM callback.{table} {'FINAL' if final else ''} "
                                  "WHERE leg_id IN %(ids)s", {"ids": tuple(leg_ids)})[0][0]
            for table in CDR_TABLES}


def _distributed_final(client, leg_ids: list[str]) -> int:
    """Current rows of these legs as an analyst reads them: the Distributed table, FINAL."""
    return client.execute("SELECT count() FROM callback.cdr_all FINAL WHERE leg_id IN %(ids)s",
                          {"ids": tuple(leg_ids)})[0][0]


def _sync(client) -> None:
    for table in CDR_TABLES:
        client.execute(f"SYSTEM SYNC REPLICA callback.{table}")


def test_a_retried_block_is_stored_once_and_every_table_reaches_the_other_replica(
        replicated: Replicated) -> None:
    run = f"dedup{uuid.uuid4().hex[:6]}"
    rows = _cdr_rows(run, 40)
    leg_ids = [row[0] for row in rows]
    sql = insert_statement(SinkOptions())
    stamp = int(time.time())
    block = insert_block(rows, stamp)
    first, second = replicated.replica(1), replicated.replica(2)
    first.execute(sql, block, columnar=True)
    time.sleep(1.1)  # a retry comes later: the server's now() would differ by now, the block does not
    first.execute(sql, block, columnar=True)  # the sink's retry on the same replica
    second.execute(sql, block, columnar=True)  # ... and on the other one (alt_hosts)
    for client in (first, second):
        _sync(client)
    expected = dict.fromkeys(CDR_TABLES, len(rows))
    assert _counts(first, leg_ids) == expected  # stored once: cdr and each view's table
    assert _counts(second, leg_ids) == expected  # and replicated, views' tables included
    assert _distributed_final(second, leg_ids) == len(rows)
    stored_at = second.execute("SELECT DISTINCT toUnixTimestamp(inserted_at) FROM callback.cdr "
                               "WHERE leg_id IN %(ids)s", {"ids": tuple(leg_ids)})
    assert stored_at == [(stamp,)]  # the sink's stamp, in epoch seconds, as the row's inserted_at
    first.disconnect()
    second.disconnect()


def test_a_client_with_alt_hosts_inserts_and_reads_via_replica_2_when_replica_1_is_killed(
        replicated: Replicated) -> None:
    """What the CDR sink and ``callback rerate`` get: ``clickhouse_client`` from settings with
    alt_hosts. Runs last in this module: replica 1 stays dead until ``down``."""
    ch = ClickHouseSettings(host="127.0.0.1", port=BASE, cluster="callback",
                            alt_hosts=f"127.0.0.1:{BASE + 1}")
    client = clickhouse_client(ch)
    before, after = _cdr_rows(f"fo{uuid.uuid4().hex[:6]}", 20), _cdr_rows(f"fo{uuid.uuid4().hex[:6]}", 20)
    sql = insert_statement(SinkOptions())
    client.execute(sql, insert_block(before, int(time.time())), columnar=True)
    assert client.connection.connected and client.connection.port == BASE  # replica 1 first

    # replication is asynchronous: parts replica 1 stored and replica 2 has not fetched yet wait for
    # replica 1 to come back (docs/analytics.md), so replica 2 catches up before the kill
    second = replicated.replica(2)
    _sync(second)
    second.disconnect()
    pid = int((replicated.state_dir / "clickhouse" / "clickhouse.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not port_accepts(BASE), 10, "replica 1 to stop accepting connections")

    client.execute(sql, insert_block(after, int(time.time())), columnar=True)
    assert client.connection.port == BASE + 1
    leg_ids = [row[0] for row in before + after]
    assert _counts(client, leg_ids) == dict.fromkeys(CDR_TABLES, len(leg_ids))
    assert _distributed_final(client, leg_ids) == len(leg_ids)
    client.disconnect()

    status = replicated.callback("stack", "status")
    assert status.returncode == 3  # a member is down, and status says which
    lines = status.stdout.splitlines()
    assert any(line.startswith("clickhouse ") and "not running" in line for line in lines), status.stdout
