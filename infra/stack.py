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
"""

from __future__ import annotations

import base64
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
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from callback.settings import ClickHouseSettings, StackSettings, get_settings
from infra.process import ManagedProcess, port_accepts, port_is_free, wait_until

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


@dataclass(frozen=True)
class StackLayout:
    """Paths and ports of one stack, derived from settings."""

    settings: StackSettings

    @property
    def root(self) -> Path:
        return Path(self.settings.state_dir).resolve()

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def clickhouse_dir(self) -> Path:
        return self.root / "clickhouse"

    @property
    def kafka_properties(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def clickhouse_config(self) -> Path:
        return self.clickhouse_dir / "config.xml"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.settings.kafka_port}"

    def kafka_ports(self) -> list[Port]:
        s = self.settings
        return [Port("Kafka broker", s.kafka_port, "CALLBACK_STACK__KAFKA_PORT"),
                Port("Kafka controller", s.kafka_controller_port, "CALLBACK_STACK__KAFKA_CONTROLLER_PORT")]

    def clickhouse_ports(self) -> list[Port]:
        return self.clickhouse_replica_ports(1)

    def kafka_process(self) -> ManagedProcess:
        return ManagedProcess("kafka", self.kafka_dir / "kafka.pid", str(self.kafka_properties))

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


def layout() -> StackLayout:
    """The stack of the settings, with as many ClickHouse replicas as its state folder records."""
    settings = get_settings().stack
    recorded = recorded_clickhouse_replicas(Path(settings.state_dir).resolve())
    if recorded is not None:
        settings = settings.model_copy(update={"clickhouse_replicas": recorded})
    return StackLayout(settings)


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


def _layout_for_up(replicas: int | None) -> StackLayout:
    """The layout ``up`` starts: ``replicas`` (the CLI option), else settings.stack when set there,
    else what the state folder records, else one server; recorded in the folder for later commands.

    A folder keeps its choice once it holds tables: replicated tables cannot start without their
    ZooKeeper, plain ones never become replicated, so another count needs another (or an emptied)
    state folder. Before that (say a first start that found a port busy) the choice can change."""
    settings = get_settings().stack
    root = Path(settings.state_dir).resolve()
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
    return StackLayout(settings.model_copy(update={"clickhouse_replicas": wanted}))


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


def kafka_properties(lay: StackLayout) -> str:
    """Broker config: one KRaft node that is broker and controller, tuned for fast local tests.

    Listeners bind 127.0.0.1 only. Internal topics get replication factor 1 (there is one broker)
    and few partitions (their creation is what a first consumer group or transaction waits for).
    Topics are never auto-created: the catalogue (infra.topics) is the only source of topics, so
    a misspelt name fails loudly instead of creating a stray topic.
    """
    s = lay.settings
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{s.kafka_controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{s.kafka_port},CONTROLLER://{HOST}:{s.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{s.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(lay.kafka_dir / "data"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "min.insync.replicas": "1",
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
    lines = ["# generated by infra/stack.py on every start; edit kafka_properties() instead"]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def kafka_log4j(lay: StackLayout) -> str:
    """Broker logs go to a rolling file in the state folder (INFO, so the start line is there)."""
    log_file = lay.kafka_dir / "server.log"
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
            raise StackError(f"{port.env_var}={port.number} is not a TCP port (1-65535)")
        if port.number in seen:
            raise StackError(f"{port.env_var} and {seen[port.number].env_var} are both {port.number}: "
                             "give each server port its own number")
        seen[port.number] = port


def _check_ports_free(ports: list[Port]) -> None:
    for port in ports:
        if not port_is_free(port.number):
            raise StackError(f"port {port.number} ({port.label}) is busy: stop what listens there "
                             f"or set {port.env_var} to a free port")


# --- Kafka -----------------------------------------------------------------------------------------


def _java_command(lay: StackLayout, main_class: str, *args: str) -> list[str]:
    java = _require_tool("java", "openjdk-17-jre-headless")
    return [java, f"-Xmx{lay.settings.kafka_heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{lay.kafka_dir / 'log4j.properties'}",
            "-cp", f"{KAFKA_LIBS}/*", main_class, *args]


def _format_kafka_storage(lay: StackLayout) -> None:
    """Format the KRaft metadata log once; a formatted folder keeps its cluster id across restarts."""
    if (lay.kafka_dir / "data" / "meta.properties").is_file():
        return
    cmd = _java_command(lay, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                        "-t", _new_cluster_id(), "-c", str(lay.kafka_properties))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=lay.kafka_dir)
    if result.returncode != 0:
        last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
        raise StackError(f"Kafka storage format failed (exit {result.returncode}): {last[0]}")
    log.info("kafka: formatted storage in %s", lay.kafka_dir / "data")


def _start_kafka(lay: StackLayout) -> int:
    ensure_kafka_jars()
    _require_tool("java", "openjdk-17-jre-headless")
    _check_ports_free(lay.kafka_ports())
    lay.kafka_dir.mkdir(parents=True, exist_ok=True)
    _write_if_changed(lay.kafka_properties, kafka_properties(lay))
    _write_if_changed(lay.kafka_dir / "log4j.properties", kafka_log4j(lay))
    _format_kafka_storage(lay)
    proc = lay.kafka_process()
    pid = proc.start(_java_command(lay, "kafka.Kafka", str(lay.kafka_properties)), cwd=lay.kafka_dir,
                     output=lay.kafka_dir / "stdout.log")
    _write_run_file(proc, pid, lay.kafka_ports(), kafka_version())
    return pid


def _kafka_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when the broker serves metadata and lists itself (what every client needs first)."""
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
    return bool(metadata.brokers)


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


def _services(lay: StackLayout) -> tuple[_Service, ...]:
    return (
        _Service(lay.kafka_process(), lay.kafka_ports(), _start_kafka,
                 lambda: _kafka_answers(lay.kafka_bootstrap),
                 (lay.kafka_dir / "stdout.log", lay.kafka_dir / "server.log")),
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


def up(provision: bool = True, clickhouse_replicas: int | None = None) -> UpReport:
    """Start Kafka and ClickHouse unless already running, wait for both, then provision them.

    ``clickhouse_replicas`` 2 adds ZooKeeper and a second ClickHouse replica (module doc); None
    keeps what settings or the state folder say (``_layout_for_up``).

    Idempotent: servers of this state dir that already run are left alone (and reported so).
    Provisioning (topic catalogue, migrations) is idempotent as well, so ``up`` is always safe.
    All or nothing: when a server fails to start, the ones this call started are stopped again.
    """
    started_at = time.monotonic()
    lay = _layout_for_up(clickhouse_replicas)
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
    if running["kafka"] is None:
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
        for svc, pid, offsets in started:  # both boot concurrently; wait for each in turn
            _wait_ready(svc, pid, offsets)
        for svc in services:
            if running[svc.proc.name] is not None:
                _wait_ready(svc, running[svc.proc.name] or -1, _log_sizes(svc))
    except BaseException:
        for svc, _pid, _offsets in started:
            svc.proc.stop(timeout=STOP_TIMEOUT_S)
            _run_file(svc.proc).unlink(missing_ok=True)
        raise

    report = UpReport(services=status(check=False), seconds=0.0)
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
    topics = apply_catalogue(lay.kafka_bootstrap, replication_factor=1)
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


def down() -> list[ServiceStatus]:
    """Stop the servers of this state dir (ClickHouse first, then ZooKeeper, then Kafka); no
    process is left."""
    lay = layout()
    result = []
    for proc in (*_clickhouse_processes_last_first(lay), *_zookeeper_processes(lay), lay.kafka_process()):
        pid = proc.stop(timeout=STOP_TIMEOUT_S)
        _run_file(proc).unlink(missing_ok=True)
        result.append(ServiceStatus(proc.name, running=False, pid=pid,
                                    action="stopped" if pid else "not running"))
    return result


def _clickhouse_processes_last_first(lay: StackLayout) -> list[ManagedProcess]:
    return [lay.clickhouse_replica_process(n) for n in reversed(lay.clickhouse_replica_numbers())]


def _zookeeper_processes(lay: StackLayout) -> list[ManagedProcess]:
    """ZooKeeper stops after every replica: a replica shutting down still talks to it."""
    return [lay.zookeeper_process()] if lay.replicated else []


def status(check: bool = True) -> list[ServiceStatus]:
    """What runs, on which ports and pids, and which versions; ``check`` also asks each server."""
    lay = layout()
    out = []
    kafka = lay.kafka_process()
    pid = kafka.running_pid()
    run = _read_run_file(kafka) if pid else {}
    ports = run.get("ports") or {p.label: p.number for p in lay.kafka_ports()}
    bootstrap = f"{HOST}:{ports.get('Kafka broker', lay.settings.kafka_port)}"
    out.append(ServiceStatus(
        "kafka", running=pid is not None, pid=pid, ports=ports,
        version=run.get("version") or kafka_version(),
        answering=bool(pid) and check and _kafka_answers(bootstrap),
        detail=f"bootstrap {bootstrap}, logs {lay.kafka_dir / 'server.log'}"))

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
