"""The local stack: a real Apache Kafka broker (KRaft) and a ClickHouse server on 127.0.0.1.

``up()`` starts what is not running yet, waits until both servers answer, then creates the topic
catalogue and applies the ClickHouse migrations; ``down()`` stops exactly what ``up()`` started
(found by pid files); ``status()`` tells what runs where. Everything a server writes (configs, data,
logs, pid files) lives in ``settings.stack.state_dir``, and every port comes from settings, so
several stacks (a developer's, a test session's) can run side by side on one machine.

``up(clickhouse_replicas=2)`` makes ClickHouse a replicated cluster: a standalone ZooKeeper (from
the Kafka jars, which carry it) and a second ClickHouse server, both replicas of one shard of the
cluster ``callback``; the tables are then created in their Replicated* form on both (see
``infra.migrate``). The choice is recorded in the state folder, since the data folders only work
with the layout that wrote them.

Why not Docker or a Python Kafka look-alike: the pipeline relies on Kafka transactions, compaction
and exact offsets, so tests run against the real broker, assembled from Maven Central jars (see
``infra/kafka/pom.xml``), and against Debian's ClickHouse 18.16, the oldest dialect we must speak.

Kafka runs as one node, or (``settings.stack.brokers = 3``, ``callback stack up --brokers 3``) as a
cluster of three: see ``KafkaNode`` for its layout and ports. The count is recorded in the state
folder when its storage is formatted, so ``status`` and ``down`` find every node without flags.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from callback.settings import ClickHouseSettings, StackSettings, get_settings
from infra.process import ManagedProcess, port_accepts, port_is_free, wait_until
from schemas.topics import Replication

log = logging.getLogger(__name__)

INFRA_DIR = Path(__file__).resolve().parent
KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
KAFKA_LIBS = INFRA_DIR / "kafka" / "libs"
CLICKHOUSE_TEMPLATES = INFRA_DIR / "clickhouse"
HOST = "127.0.0.1"
#: the <remote_servers> cluster of a replicated local stack (what settings.clickhouse.cluster names)
CLICKHOUSE_CLUSTER = "callback"
#: ClickHouse replicas the local stack can run: one server, or two replicas of one shard
CLICKHOUSE_REPLICA_CHOICES = (1, 2)
#: a standalone ZooKeeper for two ClickHouse replicas needs little memory
ZOOKEEPER_HEAP = "128m"

#: how long a server may take to answer after its process started
START_TIMEOUT_S = 90.0
#: how long a server may take to exit after SIGTERM before it gets SIGKILL
STOP_TIMEOUT_S = 30.0
_BOOTSTRAP_HINT = "run scripts/bootstrap.sh (or `make bootstrap`)"
#: Kafka node counts the local stack runs: one, or a quorum of three that survives losing any one
SUPPORTED_BROKERS = (1, 3)
#: node n of a cluster listens on node 1's broker and controller ports + PORT_STEP * (n - 1)
PORT_STEP = 2


class StackError(RuntimeError):
    """A problem the user can fix (missing tool, busy port, server that will not start).

    The message is one line that says what is wrong and what to do; the CLI prints it without a
    traceback.
    """


# --- where things live ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """A port the stack listens on, with the setting that changes it (named in error messages)."""

    label: str
    number: int
    env_var: str
    #: how far above the setting's value the port is (nodes 2 and 3 of a Kafka cluster)
    offset: int = 0

    @property
    def setting(self) -> str:
        """The setting that decides this port, as error messages name it."""
        return f"{self.env_var} + {self.offset}" if self.offset else self.env_var


@dataclass(frozen=True)
class KafkaNode:
    """One Kafka process of the stack: a KRaft node that is broker and controller at once.

    Why every node is also a controller (combined mode) rather than a controller quorum of its
    own: three JVMs instead of four or six on a developer's two cores, and still three voters, so
    the metadata quorum, like the data (replication factor 3), survives the loss of any one node,
    which is what the cluster is for. Kafka advises against combined mode in production because a
    busy broker can starve its controller; a local stack has no such load.

    Ports: node n listens on ``kafka_port`` and ``kafka_controller_port`` + 2 * (n - 1), so the
    defaults give 9092/9093, 9094/9095 and 9096/9097. The single-broker stack keeps the names it
    always had (process and folder ``kafka``), so a state folder formatted before clusters existed
    starts as before; a cluster's nodes are ``kafka-1``, ``kafka-2``, ``kafka-3``.
    """

    node_id: int
    name: str
    dir: Path
    broker: Port
    controller: Port

    @property
    def properties(self) -> Path:
        return self.dir / "server.properties"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.broker.number}"

    def ports(self) -> list[Port]:
        return [self.broker, self.controller]

    def process(self) -> ManagedProcess:
        return ManagedProcess(self.name, self.dir / "kafka.pid", str(self.properties))


@dataclass(frozen=True)
class StackLayout:
    """Paths and ports of one stack, derived from settings."""

    settings: StackSettings

    @property
    def root(self) -> Path:
        return Path(self.settings.state_dir).resolve()

    @property
    def brokers(self) -> int:
        return self.settings.brokers

    def kafka_nodes(self) -> list[KafkaNode]:
        return [self.kafka_node(node_id) for node_id in range(1, self.brokers + 1)]

    def kafka_node(self, node_id: int) -> KafkaNode:
        s, offset = self.settings, PORT_STEP * (node_id - 1)
        single = self.brokers == 1
        name = "kafka" if single else f"kafka-{node_id}"
        suffix = "" if single else f" {node_id}"
        return KafkaNode(
            node_id, name, self.root / name,
            Port(f"Kafka broker{suffix}", s.kafka_port + offset, "CALLBACK_STACK__KAFKA_PORT", offset),
            Port(f"Kafka controller{suffix}", s.kafka_controller_port + offset,
                 "CALLBACK_STACK__KAFKA_CONTROLLER_PORT", offset))

    @property
    def brokers_file(self) -> Path:
        """Where the broker count is recorded once the storage is formatted (see recorded_brokers)."""
        return self.root / "kafka-brokers.json"

    @property
    def kafka_dir(self) -> Path:
        """Node 1's folder (the single broker's)."""
        return self.kafka_node(1).dir

    @property
    def clickhouse_dir(self) -> Path:
        return self.root / "clickhouse"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka_node(1).properties

    @property
    def clickhouse_config(self) -> Path:
        return self.clickhouse_dir / "config.xml"

    @property
    def kafka_bootstrap(self) -> str:
        """Every broker's address: what clients of this stack put in kafka.bootstrap_servers."""
        return ",".join(node.address for node in self.kafka_nodes())

    def kafka_ports(self) -> list[Port]:
        return [port for node in self.kafka_nodes() for port in node.ports()]

    def clickhouse_ports(self) -> list[Port]:
        return self.clickhouse_replica_ports(1)

    def kafka_process(self) -> ManagedProcess:
        """Node 1's process (the single broker's)."""
        return self.kafka_node(1).process()

    def clickhouse_process(self) -> ManagedProcess:
        return self.clickhouse_replica_process(1)

    # the replicated layout (clickhouse_replicas > 1): replica 1 is the single server as always

    @property
    def replicated(self) -> bool:
        return self.settings.clickhouse_replicas > 1

    def clickhouse_replica_dir(self, replica: int) -> Path:
        """Replica 1 keeps the single server's folder, so one replica is laid out as it always was."""
        return self.clickhouse_dir if replica == 1 else self.root / f"clickhouse{replica}"

    def clickhouse_replica_ports(self, replica: int) -> list[Port]:
        """Replica n listens on the configured ports + n - 1, and on an interserver (replication)
        port only when there are replicas to fetch parts from it."""
        s, step = self.settings, replica - 1
        note = f" (+{step} for replica {replica})" if step else ""
        env = "CALLBACK_STACK__CLICKHOUSE_"
        ports = [Port("ClickHouse native", s.clickhouse_tcp_port + step, f"{env}TCP_PORT{note}"),
                 Port("ClickHouse HTTP", s.clickhouse_http_port + step, f"{env}HTTP_PORT{note}")]
        if self.replicated:
            ports.append(Port("ClickHouse interserver", s.clickhouse_interserver_port + step,
                              f"{env}INTERSERVER_PORT{note}"))
        return ports

    def clickhouse_replica_process(self, replica: int) -> ManagedProcess:
        name = "clickhouse" if replica == 1 else f"clickhouse-{replica}"
        folder = self.clickhouse_replica_dir(replica)
        return ManagedProcess(name, folder / "clickhouse.pid", str(folder / "config.xml"))

    def clickhouse_replica_numbers(self) -> range:
        return range(1, self.settings.clickhouse_replicas + 1)

    @property
    def zookeeper_dir(self) -> Path:
        return self.root / "zookeeper"

    def zookeeper_ports(self) -> list[Port]:
        return [Port("ZooKeeper client", self.settings.zookeeper_port, "CALLBACK_STACK__ZOOKEEPER_PORT")]

    def zookeeper_process(self) -> ManagedProcess:
        folder = self.zookeeper_dir
        return ManagedProcess("zookeeper", folder / "zookeeper.pid", str(folder / "zoo.cfg"))


def layout(brokers: int | None = None) -> StackLayout:
    """The stack of the settings, with as many ClickHouse replicas as its state folder records;
    ``brokers`` (``--brokers``) overrides settings.stack.brokers."""
    settings = get_settings().stack
    updates: dict[str, int] = {}
    recorded = recorded_clickhouse_replicas(Path(settings.state_dir).resolve())
    if recorded is not None:
        updates["clickhouse_replicas"] = recorded
    if brokers is not None:
        updates["brokers"] = brokers
    return StackLayout(settings.model_copy(update=updates) if updates else settings)


def recorded_brokers(lay: StackLayout) -> int | None:
    """The broker count this state folder was formatted with, or None when it holds no Kafka data.

    A folder formatted before the count was recorded holds one broker in ``kafka/``.
    """
    try:
        return int(json.loads(lay.brokers_file.read_text())["brokers"])
    except FileNotFoundError:
        legacy = lay.root / "kafka" / "data" / "meta.properties"
        return 1 if legacy.is_file() else None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise StackError(f"{lay.brokers_file} does not say how many brokers this stack has: write "
                         '{"brokers": N} with the count its kafka folders were formatted for') from None


def existing_layout() -> StackLayout:
    """The stack as its state folder was formatted, so ``status`` and ``down`` without flags see
    every node whatever settings.stack.brokers says now."""
    return layout(recorded_brokers(layout()))


def requested_layout(brokers: int | None = None) -> StackLayout:
    """The stack ``up`` starts: ``--brokers``, else the count the settings name
    (``CALLBACK_STACK__BROKERS`` or the settings file), else the one the state folder was formatted
    with, so a plain ``callback stack up`` restarts a cluster as it is (1 for a new folder)."""
    lay = layout(brokers)
    if brokers is None and "brokers" not in lay.settings.model_fields_set:
        return layout(recorded_brokers(lay))
    return lay


def _brokers_text(count: int) -> str:
    return f"{count} broker{'s' if count != 1 else ''}"


def _check_broker_count(lay: StackLayout) -> None:
    """One line when the count is not one we run, or not the one this state folder was formatted
    with (its nodes' storage, cluster id and quorum are fixed at formatting)."""
    if lay.brokers not in SUPPORTED_BROKERS:
        raise StackError(f"{lay.brokers} brokers: the local stack runs 1 broker or a cluster of 3 "
                         "(--brokers / CALLBACK_STACK__BROKERS)")
    recorded = recorded_brokers(lay)
    if recorded is not None and recorded != lay.brokers:
        raise StackError(f"the stack in {lay.root} was formatted with {_brokers_text(recorded)}, not "
                         f"{lay.brokers}: run `callback stack up --brokers {recorded}`, or run "
                         f"`callback stack down` and remove {lay.root} to start afresh with "
                         f"{_brokers_text(lay.brokers)}")




def _replicas_file(root: Path) -> Path:
    return root / "clickhouse-replicas"


def _holds_tables(root: Path) -> bool:
    """Whether replica 1 of this folder has created the pipeline's database (it has run migrations)."""
    return (root / "clickhouse" / "data" / "metadata" / "callback").is_dir()


def recorded_clickhouse_replicas(root: Path) -> int | None:
    """The ClickHouse replicas this state folder was set up with; None for a folder never started.

    A folder from before replicas existed holds one server's tables: that is 1 as well."""
    try:
        return int(_replicas_file(root).read_text().strip())
    except (FileNotFoundError, ValueError):
        return 1 if _holds_tables(root) else None


def _layout_for_up(replicas: int | None, lay: StackLayout | None = None) -> StackLayout:
    """The layout ``up`` starts: ``replicas`` (the CLI option), else settings.stack when set there,
    else what the state folder records, else one server; recorded in the folder for later commands.

    A folder keeps its choice once it holds tables: replicated tables cannot start without their
    ZooKeeper, plain ones never become replicated, so another count needs another (or an emptied)
    state folder. Before that (say a first start that found a port busy) the choice can change."""
    settings = get_settings().stack
    lay = lay or layout()
    root = lay.root
    recorded = recorded_clickhouse_replicas(root)
    explicit = "clickhouse_replicas" in settings.model_fields_set
    wanted = replicas if replicas is not None else (
        settings.clickhouse_replicas if explicit or recorded is None else recorded)
    if wanted not in CLICKHOUSE_REPLICA_CHOICES:
        raise StackError(f"ClickHouse replicas must be 1 or 2, not {wanted} "
                         "(--clickhouse-replicas / CALLBACK_STACK__CLICKHOUSE_REPLICAS)")
    if recorded is not None and recorded != wanted and _holds_tables(root):
        raise StackError(f"the stack in {root} was set up with {recorded} ClickHouse replica(s), not "
                         f"{wanted}: use another CALLBACK_STACK__STATE_DIR, or `callback stack down` and "
                         "delete that folder")
    root.mkdir(parents=True, exist_ok=True)
    _replicas_file(root).write_text(f"{wanted}\n")
    return StackLayout(lay.settings.model_copy(update={"clickhouse_replicas": wanted}))


# --- reports -------------------------------------------------------------------------------------


@dataclass
class ServiceStatus:
    """What ``status`` knows about one server."""

    name: str
    running: bool
    pid: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    version: str | None = None
    answering: bool = False
    #: "started" / "already running" / "stopped" / "not running": what the last action did
    action: str = ""
    detail: str = ""


@dataclass
class UpReport:
    services: list[ServiceStatus]
    seconds: float
    #: filled when ``up(provision=True)``: see infra.topics.CatalogueReport
    topics: Any = None
    migrations: list[str] = field(default_factory=list)


# --- tools and jars ------------------------------------------------------------------------------


def _require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"`{name}` not found on PATH: {_BOOTSTRAP_HINT} "
                         f"(it installs the Debian package {package})")
    return path


def clickhouse_server_binary() -> str:
    """Debian puts the server in /usr/sbin, which a non-root PATH often lacks."""
    found = shutil.which("clickhouse-server") or (
        "/usr/sbin/clickhouse-server" if os.access("/usr/sbin/clickhouse-server", os.X_OK) else None)
    if found is None:
        raise StackError(f"clickhouse-server is not installed: {_BOOTSTRAP_HINT} "
                         "(it runs `apt-get install clickhouse-server clickhouse-client`)")
    return found


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()


def _jars_stamp(libs: Path) -> Path:
    return libs / ".complete"


def kafka_jars_present(libs: Path = KAFKA_LIBS) -> bool:
    stamp = _jars_stamp(libs)
    return stamp.is_file() and stamp.read_text().strip() == _pom_digest()


def ensure_kafka_jars(libs: Path = KAFKA_LIBS) -> Path:
    """Fetch the broker jars from Maven Central once (re-fetched only when the pom changes).

    Maven writes into a staging folder inside ``libs`` (git-ignored with it); the jars are moved
    into place and the stamp is written last, so an interrupted fetch never looks complete.
    """
    if kafka_jars_present(libs):
        return libs
    mvn = _require_tool("mvn", "maven")
    _require_tool("java", "openjdk-17-jre-headless")
    staging = libs / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    log.info("fetching Kafka jars from Maven Central into %s (once)", libs)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise StackError(f"mvn could not fetch the Kafka jars (exit {result.returncode}): {last[0].strip()}")
    _jars_stamp(libs).unlink(missing_ok=True)
    for old in libs.glob("*.jar"):
        old.unlink()
    for jar in staging.glob("*.jar"):
        jar.rename(libs / jar.name)
    shutil.rmtree(staging, ignore_errors=True)
    _jars_stamp(libs).write_text(_pom_digest() + "\n")
    return libs


def kafka_version(libs: Path = KAFKA_LIBS) -> str | None:
    """Kafka version of the jars, read from the broker jar's file name (kafka_2.13-3.9.1.jar)."""
    jars = sorted(libs.glob("kafka_2.13-*.jar"))
    return jars[0].stem.split("-", 1)[1] if jars else None


# --- configs -------------------------------------------------------------------------------------


def kafka_properties(lay: StackLayout, node: KafkaNode | None = None) -> str:
    """Config of one KRaft node (node 1 by default) that is broker and controller, tuned for fast
    local tests.

    Listeners bind 127.0.0.1 only. Internal topics get few partitions (their creation is what a
    first consumer group or transaction waits for) and the replication of ``Replication.for_brokers``:
    1 on the single broker; 3 with ``min.insync.replicas`` 2 on a cluster of three, so offsets,
    transactions and ``acks=all`` writes go on while one node is down. Topics are never
    auto-created: the catalogue (infra.topics) is the only source of topics, so a misspelt name
    fails loudly instead of creating a stray topic.
    """
    node = node or lay.kafka_node(1)
    replication = Replication.for_brokers(lay.brokers)
    factor, min_isr = str(replication.factor), str(replication.min_insync_replicas)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(f"{n.node_id}@{HOST}:{n.controller.number}"
                                             for n in lay.kafka_nodes()),
        "listeners": f"PLAINTEXT://{node.address},CONTROLLER://{HOST}:{node.controller.number}",
        "advertised.listeners": f"PLAINTEXT://{node.address}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.dir / "data"),
        "num.partitions": "1",
        "default.replication.factor": factor,
        "offsets.topic.replication.factor": factor,
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "10",
        "min.insync.replicas": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        # the cleaner's dedupe buffer comes out of the heap: 128 MB default is a quarter of ours
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.retention.check.interval.ms": "60000",
    }
    if lay.brokers > 1:
        props |= _cluster_properties()
    lines = ["# generated by infra/stack.py on every start; edit kafka_properties() instead"]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def _cluster_properties() -> dict[str, str]:
    """What a cluster adds: a node that stops heartbeating (SIGKILL, a frozen JVM) is fenced after
    4 s instead of 9 s, and its partitions' leadership and in-sync sets move on that much sooner;
    the longer default is for networks, not three processes on one host."""
    return {"broker.heartbeat.interval.ms": "1000", "broker.session.timeout.ms": "4000"}


def kafka_log4j(lay: StackLayout, node: KafkaNode | None = None) -> str:
    """Broker logs go to a rolling file in the node's folder (INFO, so the start line is there)."""
    log_file = (node or lay.kafka_node(1)).dir / "server.log"
    return "\n".join([
        "log4j.rootLogger=INFO, file",
        "log4j.appender.file=org.apache.log4j.RollingFileAppender",
        f"log4j.appender.file.File={log_file}",
        "log4j.appender.file.MaxFileSize=20MB",
        "log4j.appender.file.MaxBackupIndex=2",
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
        "log4j.logger.kafka.request.logger=WARN",
        "log4j.logger.state.change.logger=WARN",
        "",
    ])


def clickhouse_configs(lay: StackLayout, replica: int = 1) -> dict[str, str]:
    """config.xml and users.xml from the templates in infra/clickhouse, with paths and ports filled;
    on a replicated stack also config.d/replication.xml, which ClickHouse merges into config.xml."""
    ports = {port.label: port.number for port in lay.clickhouse_replica_ports(replica)}
    values = {
        "state_dir": str(lay.clickhouse_replica_dir(replica)),
        "tcp_port": str(ports["ClickHouse native"]),
        "http_port": str(ports["ClickHouse HTTP"]),
    }
    configs = {name: Template((CLICKHOUSE_TEMPLATES / name).read_text()).substitute(values)
               for name in ("config.xml", "users.xml")}
    if lay.replicated:
        configs["config.d/replication.xml"] = clickhouse_replication_config(lay, replica)
    return configs


def clickhouse_replication_config(lay: StackLayout, replica: int) -> str:
    """What makes a server replica ``replica`` of the cluster: ZooKeeper, its <macros> (one shard,
    ``replica-N``), the <remote_servers> cluster of all replicas, and its interserver port, on which
    the other replicas fetch the parts it wrote (advertised as 127.0.0.1, not the host name)."""
    members = "\n".join(
        f"{' ' * 16}<replica><host>{HOST}</host><port>{port}</port></replica>"
        for port in (lay.settings.clickhouse_tcp_port + n - 1 for n in lay.clickhouse_replica_numbers()))
    values = {
        "interserver_port": str(lay.settings.clickhouse_interserver_port + replica - 1),
        "zookeeper_port": str(lay.settings.zookeeper_port),
        "replica": f"replica-{replica}",
        "cluster": CLICKHOUSE_CLUSTER,
        "members": members.strip(),
    }
    return Template((CLICKHOUSE_TEMPLATES / "replication.xml").read_text()).substitute(values)


def zookeeper_config(lay: StackLayout) -> str:
    """zoo.cfg of one standalone ZooKeeper: loopback only, data in the state folder, the admin web
    server off (it would take port 8080), ``ruok`` allowed for the readiness probe, old snapshots
    purged hourly."""
    props = {
        "tickTime": "2000",
        "dataDir": str(lay.zookeeper_dir / "data"),
        "clientPort": str(lay.settings.zookeeper_port),
        "clientPortAddress": HOST,
        "maxClientCnxns": "0",
        "admin.enableServer": "false",
        "4lw.commands.whitelist": "ruok,srvr,mntr",
        "autopurge.snapRetainCount": "3",
        "autopurge.purgeInterval": "1",
    }
    lines = ["# generated by infra/stack.py on every start; edit zookeeper_config() instead"]
    return "\n".join(lines + [f"{key}={value}" for key, value in props.items()]) + "\n"


def zookeeper_log4j(lay: StackLayout) -> str:
    """ZooKeeper logs (through the Kafka jars' slf4j-reload4j) to a rolling file in its folder."""
    return "\n".join([
        "log4j.rootLogger=INFO, file",
        "log4j.appender.file=org.apache.log4j.RollingFileAppender",
        f"log4j.appender.file.File={lay.zookeeper_dir / 'zookeeper.log'}",
        "log4j.appender.file.MaxFileSize=20MB",
        "log4j.appender.file.MaxBackupIndex=2",
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout",
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n",
        "",
    ])


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


# --- run metadata ----------------------------------------------------------------------------------


def _run_file(proc: ManagedProcess) -> Path:
    return proc.pid_file.with_suffix(".run.json")


def _write_run_file(proc: ManagedProcess, pid: int, ports: list[Port], version: str | None) -> None:
    """Remember how the running server was started (ports, version): ``status`` reports these."""
    data = {"pid": pid, "ports": {p.label: p.number for p in ports}, "version": version,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _run_file(proc).write_text(json.dumps(data, indent=2) + "\n")


def _read_run_file(proc: ManagedProcess) -> dict[str, Any]:
    try:
        return json.loads(_run_file(proc).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _check_same_ports(proc: ManagedProcess, ports: list[Port]) -> None:
    """A server already running on other ports than configured now cannot be silently reused."""
    recorded = _read_run_file(proc).get("ports", {})
    for port in ports:
        was = recorded.get(port.label)
        if was is not None and was != port.number:
            raise StackError(f"{proc.name} of this state dir already runs with {port.label} port {was}, "
                             f"not {port.number}: run `callback stack down` first to change ports")


def _check_port_settings(ports: list[Port]) -> None:
    """Ports must be valid and distinct: one server per port, and Kafka's two listeners differ."""
    seen: dict[int, Port] = {}
    for port in ports:
        if not 1 <= port.number <= 65535:
            given = f"{port.setting} = {port.number}" if port.offset else f"{port.env_var}={port.number}"
            raise StackError(f"{given} is not a TCP port (1-65535)")
        if port.number in seen:
            raise StackError(f"{port.setting} and {seen[port.number].setting} are both {port.number}: "
                             "give each server port its own number")
        seen[port.number] = port


def _check_ports_free(ports: list[Port]) -> None:
    for port in ports:
        if not port_is_free(port.number):
            if port.offset:  # a cluster node's port: moving the setting moves all of them
                raise StackError(f"port {port.number} ({port.label}, {port.setting}) is busy: stop what "
                                 f"listens there or set {port.env_var} to another port")
            raise StackError(f"port {port.number} ({port.label}) is busy: stop what listens there "
                             f"or set {port.env_var} to a free port")


# --- Kafka -----------------------------------------------------------------------------------------


def _java_command(lay: StackLayout, node: KafkaNode, main_class: str, *args: str) -> list[str]:
    java = _require_tool("java", "openjdk-17-jre-headless")
    return [java, f"-Xmx{lay.settings.kafka_heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{node.dir / 'log4j.properties'}",
            "-cp", f"{KAFKA_LIBS}/*", main_class, *args]


def _meta_properties(node: KafkaNode) -> Path:
    return node.dir / "data" / "meta.properties"


def _cluster_id(lay: StackLayout) -> str:
    """The id every node of this stack is formatted with: the one a formatted node already has
    (a cluster's nodes are formatted one after another), else a new one."""
    for node in lay.kafka_nodes():
        try:
            for line in _meta_properties(node).read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        except FileNotFoundError:
            continue
    return _new_cluster_id()


def _format_kafka_storage(lay: StackLayout, node: KafkaNode) -> None:
    """Format the node's KRaft metadata log once (a formatted folder keeps its cluster id across
    restarts), and record the broker count the state folder now holds."""
    if _meta_properties(node).is_file():
        return
    cmd = _java_command(lay, node, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                        "-t", _cluster_id(lay), "-c", str(node.properties))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=node.dir)
    if result.returncode != 0:
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise StackError(f"Kafka storage format failed (exit {result.returncode}): {last[0]}")
    if not lay.brokers_file.is_file():
        lay.brokers_file.write_text(json.dumps({"brokers": lay.brokers}) + "\n")
    log.info("%s: formatted storage in %s", node.name, node.dir / "data")


def _start_kafka(lay: StackLayout, node: KafkaNode) -> int:
    ensure_kafka_jars()
    _require_tool("java", "openjdk-17-jre-headless")
    _check_ports_free(node.ports())
    node.dir.mkdir(parents=True, exist_ok=True)
    _write_if_changed(node.properties, kafka_properties(lay, node))
    _write_if_changed(node.dir / "log4j.properties", kafka_log4j(lay, node))
    _format_kafka_storage(lay, node)
    proc = node.process()
    pid = proc.start(_java_command(lay, node, "kafka.Kafka", str(node.properties)), cwd=node.dir,
                     output=node.dir / "stdout.log")
    _write_run_file(proc, pid, node.ports(), kafka_version())
    return pid


def _kafka_answers(
    bootstrap: str, timeout: float = 2.0, node_id: int | None = None, brokers: int = 1
) -> bool:
    """True when the broker serves metadata and lists itself (what every client needs first).

    With ``node_id``, that node must be among the brokers listed: a cluster's node answers only
    once the quorum has a leader, and is listed once the controller has unfenced it. With
    ``brokers``, at least that many must be listed."""
    from confluent_kafka.admin import AdminClient

    from callback.kafka_io import base_config

    if not port_accepts(int(bootstrap.rsplit(":", 1)[1])):
        return False  # spares librdkafka's connection-refused noise while the JVM boots
    # this stack's own plaintext broker, by address: the settings may point at another cluster
    admin = AdminClient(base_config(bootstrap, silent=True) | {"socket.connection.setup.timeout.ms": 1000})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException while the broker is still starting
        return False
    if node_id is not None and node_id not in metadata.brokers:
        return False
    return len(metadata.brokers) >= brokers


# --- ClickHouse ------------------------------------------------------------------------------------


def _start_clickhouse(lay: StackLayout, replica: int = 1) -> int:
    binary = clickhouse_server_binary()
    folder = lay.clickhouse_replica_dir(replica)
    _check_ports_free(lay.clickhouse_replica_ports(replica))
    for sub in ("data", "tmp", "log", "user_files", "format_schemas"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, text in clickhouse_configs(lay, replica).items():
        _write_if_changed(folder / name, text)
    proc = lay.clickhouse_replica_process(replica)
    pid = proc.start([binary, f"--config-file={folder / 'config.xml'}"], cwd=folder,
                     output=folder / "log" / "stdout.log")
    _write_run_file(proc, pid, lay.clickhouse_replica_ports(replica), None)
    return pid


def clickhouse_query(port: int, sql: str, timeout: float = 5.0) -> str:
    """Run one query over ClickHouse's HTTP interface (no driver needed, works on any version)."""
    request = urllib.request.Request(f"http://{HOST}:{port}/", data=sql.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode().strip()


def _clickhouse_answers(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{http_port}/ping", timeout=1.0) as response:
            return response.read().strip() == b"Ok."
    except (urllib.error.URLError, OSError):
        return False


def _clickhouse_version(http_port: int) -> str | None:
    try:
        return clickhouse_query(http_port, "SELECT version()")
    except (urllib.error.URLError, OSError):
        return None


# --- ZooKeeper (replicated ClickHouse only) --------------------------------------------------------


def zookeeper_version(libs: Path = KAFKA_LIBS) -> str | None:
    jars = sorted(libs.glob("zookeeper-[0-9]*.jar"))
    return jars[0].stem.split("-", 1)[1] if jars else None


def _start_zookeeper(lay: StackLayout) -> int:
    """One standalone ZooKeeper from the Kafka jars (zookeeper, jute, netty, slf4j are among them)."""
    ensure_kafka_jars()
    java = _require_tool("java", "openjdk-17-jre-headless")
    _check_ports_free(lay.zookeeper_ports())
    (lay.zookeeper_dir / "data").mkdir(parents=True, exist_ok=True)
    _write_if_changed(lay.zookeeper_dir / "zoo.cfg", zookeeper_config(lay))
    _write_if_changed(lay.zookeeper_dir / "log4j.properties", zookeeper_log4j(lay))
    proc = lay.zookeeper_process()
    cmd = [java, f"-Xmx{ZOOKEEPER_HEAP}", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
           f"-Dlog4j.configuration=file:{lay.zookeeper_dir / 'log4j.properties'}",
           "-cp", f"{KAFKA_LIBS}/*", "org.apache.zookeeper.server.quorum.QuorumPeerMain",
           str(lay.zookeeper_dir / "zoo.cfg")]
    pid = proc.start(cmd, cwd=lay.zookeeper_dir, output=lay.zookeeper_dir / "stdout.log")
    _write_run_file(proc, pid, lay.zookeeper_ports(), zookeeper_version())
    return pid


def _zookeeper_answers(port: int) -> bool:
    """ZooKeeper's own health check: ``ruok`` answered with ``imok`` once it serves clients."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"ruok")
            return sock.recv(4) == b"imok"
    except OSError:
        return False


# --- up / down / status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Service:
    """How ``up`` handles one server: its process, ports, how to start it and to ask if it is ready."""

    proc: ManagedProcess
    ports: list[Port]
    start: Callable[[StackLayout], int]
    ready: Callable[[], bool]
    #: logs to quote when the server dies while starting, most telling first
    logs: tuple[Path, ...]


def _kafka_service(lay: StackLayout, node: KafkaNode) -> _Service:
    return _Service(node.process(), node.ports(), functools.partial(_start_kafka, node=node),
                    functools.partial(_kafka_answers, node.address, node_id=node.node_id),
                    (node.dir / "stdout.log", node.dir / "server.log"))


def _services(lay: StackLayout) -> tuple[_Service, ...]:
    return (
        *(_kafka_service(lay, node) for node in lay.kafka_nodes()),
        _Service(lay.clickhouse_process(), lay.clickhouse_ports(), _start_clickhouse,
                 lambda: _clickhouse_answers(lay.settings.clickhouse_http_port),
                 (lay.clickhouse_dir / "log" / "stdout.log",
                  lay.clickhouse_dir / "log" / "clickhouse-server.err.log")),
    ) + _replication_services(lay)


def _replication_services(lay: StackLayout) -> tuple[_Service, ...]:
    """ZooKeeper and ClickHouse replicas 2..n of a replicated stack; none for one server."""
    if not lay.replicated:
        return ()
    zookeeper = _Service(lay.zookeeper_process(), lay.zookeeper_ports(), _start_zookeeper,
                         lambda: _zookeeper_answers(lay.settings.zookeeper_port),
                         (lay.zookeeper_dir / "stdout.log", lay.zookeeper_dir / "zookeeper.log"))
    return (zookeeper, *(_clickhouse_replica_service(lay, n) for n in lay.clickhouse_replica_numbers()[1:]))


def _clickhouse_replica_service(lay: StackLayout, replica: int) -> _Service:
    folder = lay.clickhouse_replica_dir(replica)
    http_port = lay.settings.clickhouse_http_port + replica - 1
    return _Service(lay.clickhouse_replica_process(replica), lay.clickhouse_replica_ports(replica),
                    lambda layout_: _start_clickhouse(layout_, replica),
                    lambda: _clickhouse_answers(http_port),
                    (folder / "log" / "stdout.log", folder / "log" / "clickhouse-server.err.log"))


def _log_sizes(service: _Service) -> dict[Path, int]:
    return {path: path.stat().st_size if path.is_file() else 0 for path in service.logs}


def _why_it_died(offsets: dict[Path, int]) -> str:
    """What a server wrote since it was started: its first error lines, or all of a short output."""
    fallback = ""
    for path, offset in offsets.items():
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
        except FileNotFoundError:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if 0 < len(lines) <= 4:  # e.g. the JVM refusing its options
            return " | ".join(lines)
        errors = [line for line in lines if "ERROR" in line or "Error" in line or "Exception" in line]
        if errors:
            return " | ".join(errors[:2])
        fallback = fallback or (lines[-1] if lines else "")
    return fallback or "no output"


def _wait_ready(service: _Service, pid: int, offsets: dict[Path, int]) -> None:
    """Wait until the server answers; fail fast, quoting its own error, if the process dies."""
    proc = service.proc

    def done() -> bool:
        return proc.running_pid() is None or service.ready()

    if not wait_until(done, START_TIMEOUT_S, interval=0.2):
        raise StackError(f"{proc.name} (pid {pid}) did not answer within {START_TIMEOUT_S:.0f} s: "
                         f"see {service.logs[-1]}")
    if proc.running_pid() is None:
        reason = _why_it_died(offsets)[:300]
        raise StackError(f"{proc.name} exited during start (exit code {proc.exit_code(pid)}): {reason} "
                         f"(logs: {service.logs[0].parent})")


def up(
    provision: bool = True, brokers: int | None = None, clickhouse_replicas: int | None = None
) -> UpReport:
    """Start Kafka and ClickHouse unless already running, wait for both, then provision them.

    ``clickhouse_replicas`` 2 adds ZooKeeper and a second ClickHouse replica (module doc); None
    keeps what settings or the state folder say (``_layout_for_up``).

    Idempotent: servers of this state dir that already run are left alone (and reported so).
    Provisioning (topic catalogue, migrations) is idempotent as well, so ``up`` is always safe.
    All or nothing: when a server fails to start, the ones this call started are stopped again.
    ``brokers`` (``--brokers``) overrides settings.stack.brokers; a count asked for must be the one
    the state folder was formatted with (``requested_layout``).
    """
    started_at = time.monotonic()
    lay = requested_layout(brokers)
    _check_broker_count(lay)
    lay = _layout_for_up(clickhouse_replicas, lay)
    services = _services(lay)
    _check_port_settings([port for svc in services for port in svc.ports])
    running = {svc.proc.name: svc.proc.running_pid() for svc in services}
    # check every port first, so a busy ClickHouse port does not leave a half-started stack behind
    for svc in services:
        if running[svc.proc.name] is None:
            _check_ports_free(svc.ports)
        else:
            _check_same_ports(svc.proc, svc.ports)
    # and every tool, so a missing one is reported before anything starts
    if any(running[node.name] is None for node in lay.kafka_nodes()):
        _require_tool("java", "openjdk-17-jre-headless")
        if not kafka_jars_present():
            _require_tool("mvn", "maven")
    if running["clickhouse"] is None:
        clickhouse_server_binary()
    if lay.replicated and None in running.values():
        _require_tool("java", "openjdk-17-jre-headless")  # ZooKeeper
        clickhouse_server_binary()

    started: list[tuple[_Service, int, dict[Path, int]]] = []
    try:
        for svc in services:
            if running[svc.proc.name] is None:
                offsets = _log_sizes(svc)
                started.append((svc, svc.start(lay), offsets))
        for svc, pid, offsets in started:  # all boot concurrently; wait for each in turn
            _wait_ready(svc, pid, offsets)
        for svc in services:
            if running[svc.proc.name] is not None:
                _wait_ready(svc, running[svc.proc.name] or -1, _log_sizes(svc))
    except BaseException:
        _stop_together([svc.proc for svc, _pid, _offsets in started])
        raise

    report = UpReport(services=_status(lay, check=False), seconds=0.0)
    for service in report.services:
        service.action = "already running" if running[service.name] else "started"
        service.answering = True
    if provision:
        report.topics, report.migrations = _provision(lay)
    report.seconds = time.monotonic() - started_at
    return report


def _provision(lay: StackLayout) -> tuple[Any, list[str]]:
    """Create the topic catalogue and apply migrations on this stack's own servers."""
    from infra.migrate import migrate
    from infra.topics import apply_catalogue

    # by address, like the probes: these are this stack's servers whatever the settings point at
    if lay.brokers > 1:
        # each node answered listing itself; the catalogue needs every node in everyone's metadata
        # (a topic created while a node is still joining fails, or gets fewer replicas). Asked of
        # each node by its own address: a client's metadata comes from any one of them, and a node
        # whose cache lags still lists fewer brokers than the others
        def everyone_listed() -> bool:
            return all(_kafka_answers(node.address, brokers=lay.brokers) for node in lay.kafka_nodes())

        if not wait_until(everyone_listed, START_TIMEOUT_S, interval=0.5):
            raise StackError(f"the cluster at {lay.kafka_bootstrap} does not list its {lay.brokers} "
                             f"brokers {START_TIMEOUT_S:.0f} s after they started: see the nodes' server.log")
    replication = Replication.for_brokers(lay.brokers)
    topics = apply_catalogue(lay.kafka_bootstrap, replication_factor=replication.factor)
    if lay.brokers > 1:
        _create_internal_topics(lay.kafka_bootstrap)
    return topics, migrate(stack_clickhouse_settings(lay))


def stack_clickhouse_settings(lay: StackLayout) -> ClickHouseSettings:
    """settings.clickhouse that point at this stack's ClickHouse: replica 1, and on a replicated
    stack its cluster and the other replicas as alt hosts (what a sink or ``rerate`` would use)."""
    s = lay.settings
    if not lay.replicated:
        return ClickHouseSettings(host=HOST, port=s.clickhouse_tcp_port, http_port=s.clickhouse_http_port)
    others = ",".join(f"{HOST}:{s.clickhouse_tcp_port + n - 1}" for n in lay.clickhouse_replica_numbers()[1:])
    return ClickHouseSettings(host=HOST, port=s.clickhouse_tcp_port, http_port=s.clickhouse_http_port,
                              cluster=CLICKHOUSE_CLUSTER, alt_hosts=others)


def _create_internal_topics(bootstrap: str) -> None:
    """Have a cluster create ``__consumer_offsets`` and ``__transaction_state`` now, while all its
    nodes run.

    Kafka creates them on first use (the first coordinator lookup of a consumer group or of a
    transactional producer) with replication factor 3, and refuses to while a node is down: a
    consumer group or a rater first started after a node was lost would wait for it to return.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from callback.kafka_io import base_config
    from infra.topics import ADMIN_TIMEOUT_S, wait_for_leaders
    from schemas.topics import CATALOGUE

    config = base_config(bootstrap, silent=True)
    producer = Producer(config | {"transactional.id": "callback-stack-internal-topics"})
    producer.init_transactions(ADMIN_TIMEOUT_S)
    # a consumer's offset lookup, not the admin client's: librdkafka's admin OffsetFetch can crash
    # on the NOT_COORDINATOR a new cluster answers (confluent-kafka-python #1982)
    consumer = Consumer(config | {"group.id": "callback-stack-internal-topics", "enable.auto.commit": False})
    settling = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                KafkaError.COORDINATOR_LOAD_IN_PROGRESS}

    def offsets_answered() -> bool:
        try:
            consumer.committed([TopicPartition(CATALOGUE[0].name, 0)], timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() not in settling:
                raise
            return False  # the offsets topic is being created, or its leaders elected
        return True

    try:
        if not wait_until(offsets_answered, ADMIN_TIMEOUT_S, interval=0.2):
            raise StackError(f"the cluster at {bootstrap} has no consumer group coordinator "
                             f"{ADMIN_TIMEOUT_S:.0f} s after it started: see the nodes' server.log")
    finally:
        consumer.close()
    wait_for_leaders(AdminClient(config), ["__consumer_offsets", "__transaction_state"])


def _stop(proc: ManagedProcess) -> ServiceStatus:
    pid = proc.stop(timeout=STOP_TIMEOUT_S)
    _run_file(proc).unlink(missing_ok=True)
    return ServiceStatus(proc.name, running=False, pid=pid, action="stopped" if pid else "not running")


def _stop_together(procs: list[ManagedProcess]) -> list[ServiceStatus]:
    """Stop servers at the same time. A cluster's nodes must: each one's controlled shutdown asks
    the controller quorum to move its partitions away, and stopped one after another the last node
    would find no quorum left to ask and wait out ``STOP_TIMEOUT_S`` before its SIGKILL."""
    if not procs:
        return []
    with ThreadPoolExecutor(max_workers=len(procs)) as pool:
        return list(pool.map(_stop, procs))


def down() -> list[ServiceStatus]:
    """Stop the servers of this state dir (ClickHouse replicas first, then ZooKeeper, then every
    Kafka node together); no process is left."""
    lay = existing_layout()
    first = [*_clickhouse_processes_last_first(lay), *_zookeeper_processes(lay)]
    return [*(_stop(proc) for proc in first), *_stop_together([n.process() for n in lay.kafka_nodes()])]


def _clickhouse_processes_last_first(lay: StackLayout) -> list[ManagedProcess]:
    return [lay.clickhouse_replica_process(n) for n in reversed(lay.clickhouse_replica_numbers())]


def _zookeeper_processes(lay: StackLayout) -> list[ManagedProcess]:
    """ZooKeeper stops after every replica: a replica shutting down still talks to it."""
    return [lay.zookeeper_process()] if lay.replicated else []


def status(check: bool = True) -> list[ServiceStatus]:
    """What runs, on which ports and pids, and which versions; ``check`` also asks each server.

    Every node of the stack as its state folder was formatted (``existing_layout``)."""
    return _status(existing_layout(), check)


def _kafka_status(lay: StackLayout, node: KafkaNode, check: bool) -> ServiceStatus:
    proc = node.process()
    pid = proc.running_pid()
    run = _read_run_file(proc) if pid else {}
    ports = run.get("ports") or {p.label: p.number for p in node.ports()}
    address = f"{HOST}:{ports.get(node.broker.label, node.broker.number)}"
    where = f"node {node.node_id} of {lay.brokers}, " if lay.brokers > 1 else ""
    return ServiceStatus(
        node.name, running=pid is not None, pid=pid, ports=ports,
        version=run.get("version") or kafka_version(),
        answering=bool(pid) and check and _kafka_answers(address, node_id=node.node_id),
        detail=f"{where}bootstrap {lay.kafka_bootstrap}, logs {node.dir / 'server.log'}")


def _status(lay: StackLayout, check: bool) -> list[ServiceStatus]:
    out = [_kafka_status(lay, node, check) for node in lay.kafka_nodes()]
    out += [_clickhouse_status(lay, n) for n in lay.clickhouse_replica_numbers()]
    if lay.replicated:
        out.append(_zookeeper_status(lay, check))
    return out


def _clickhouse_status(lay: StackLayout, replica: int) -> ServiceStatus:
    proc = lay.clickhouse_replica_process(replica)
    pid = proc.running_pid()
    run = _read_run_file(proc) if pid else {}
    ports = run.get("ports") or {p.label: p.number for p in lay.clickhouse_replica_ports(replica)}
    http_port = ports.get("ClickHouse HTTP", lay.settings.clickhouse_http_port + replica - 1)
    version = _clickhouse_version(http_port) if pid else None
    role = f"replica-{replica} of cluster {CLICKHOUSE_CLUSTER}, " if lay.replicated else ""
    return ServiceStatus(proc.name, running=pid is not None, pid=pid, ports=ports, version=version,
                         answering=version is not None,
                         detail=f"{role}logs {lay.clickhouse_replica_dir(replica) / 'log'}")


def _zookeeper_status(lay: StackLayout, check: bool) -> ServiceStatus:
    proc = lay.zookeeper_process()
    pid = proc.running_pid()
    run = _read_run_file(proc) if pid else {}
    ports = run.get("ports") or {p.label: p.number for p in lay.zookeeper_ports()}
    port = ports.get("ZooKeeper client", lay.settings.zookeeper_port)
    return ServiceStatus("zookeeper", running=pid is not None, pid=pid, ports=ports,
                         version=run.get("version") or zookeeper_version(),
                         answering=bool(pid) and check and _zookeeper_answers(port),
                         detail=f"standalone, data {lay.zookeeper_dir / 'data'}, logs {lay.zookeeper_dir}")
