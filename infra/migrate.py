"""Versioned ClickHouse migrations: ``infra/migrations/NNNN_name.sql``, each applied once, in order.

ClickHouse has no transactional DDL and 18.16 no migration tooling, so this is deliberately small:
a file is split into statements (a statement ends with ``;`` at the end of a line), each statement
is executed on its own (the native protocol takes one per query), and the file is recorded in
``callback.schema_migrations`` with its SHA-256 once all its statements succeeded. Editing a file
that was already applied is an error: fix forward with a new file, so every server (a developer's,
CI's, a carrier's) ends up with the same schema.

A file that fails halfway is not recorded and runs again next time from its first statement, so
write statements that can repeat (``CREATE TABLE IF NOT EXISTS``...). Two ``migrate`` runs at once
against one server are not coordinated; run migrations from one place.

On a replicated cluster (settings.clickhouse.cluster, replicas ``host:port`` + ``alt_hosts``) the
same files are applied to every replica by ``apply_cluster_migrations``, rewritten on the way
(``replicated_statement``): each MergeTree-family engine becomes its Replicated* form, with the
ZooKeeper path ``/clickhouse/tables/{shard}/<db>.<table>`` and the replica name ``{replica}`` taken
from each server's ``<macros>``. Why per replica rather than ``ON CLUSTER``: ClickHouse 18.16 runs
``ON CLUSTER`` DDL only through its distributed DDL queue (``<distributed_ddl>`` config, a task
queue in ZooKeeper, every server's own reading of it), which a carrier's cluster may not have, and
it reports a failure on one replica long after the statement returned; one connection per replica
runs each statement where it is meant to run and stops at the first failure with its reason.
Each replica keeps its own ``callback.schema_migrations`` (plain MergeTree), so it records what was
applied *there*. Statements run in lockstep, one at a time on every replica, because ClickHouse
replicates some of them by itself: an ``ALTER``, ``INSERT``, ``OPTIMIZE`` or ``TRUNCATE`` of a
Replicated table runs on the first replica only, and the others wait until they have it (a second
``ALTER ... ADD COLUMN`` would fail, a replica created later than an ALTER would not match the
table's structure in ZooKeeper). A replica added to a cluster after its tables were migrated is
therefore set up as ClickHouse documents (its tables created from ``SHOW CREATE TABLE`` of a
running replica), not by replaying the migrations.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_driver import Client

from callback.settings import ClickHouseSettings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DATABASE = "callback"
TABLE = f"{DATABASE}.schema_migrations"
#: seconds one statement may take (the client's send_receive_timeout): a migration may rewrite or
#: backfill a large table, so the driver's own default rather than the sink's minute
STATEMENT_TIMEOUT_S = 300

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
#: INSERT with its data inline (VALUES / FORMAT after the table): clickhouse-driver sends it as a
#: plain query, and ClickHouse 18.16 then waits for a data block that never comes (send_receive_timeout).
_INLINE_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+[\w.`\"]+\s*(\([^)]*\))?\s*(VALUES|FORMAT)\b",
                            re.IGNORECASE)

#: where a replicated table keeps its parts list in ZooKeeper; {shard} and {replica} are each
#: server's <macros>, so one DDL text serves every replica
ZOOKEEPER_PATH = "/clickhouse/tables/{shard}/%s"
REPLICA_NAME = "{replica}"
#: Distributed tables created over the cluster, for reads that span it: source -> Distributed name
DISTRIBUTED_TABLES = {f"{DATABASE}.cdr": f"{DATABASE}.cdr_all"}
#: how long a replica may take to receive what another replica's statement did
REPLICA_SYNC_TIMEOUT_S = 120.0

_CREATE = re.compile(r"^\s*CREATE\s+(?:TABLE|MATERIALIZED\s+VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.`\"]+)",
                     re.IGNORECASE)
_MERGE_TREE_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*)MergeTree\b", re.IGNORECASE)
#: statements whose effect a Replicated table passes on to its other replicas by itself
_REPLICATED_BY_TABLE = re.compile(
    r"^\s*(?:ALTER\s+TABLE|INSERT\s+INTO|OPTIMIZE\s+TABLE|TRUNCATE\s+TABLE(?:\s+IF\s+EXISTS)?)\s+([\w.`\"]+)",
    re.IGNORECASE)


class MigrationError(RuntimeError):
    """A migration cannot be applied (bad file name, edited after apply, statement failed)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        statements = split_statements(self.sql)
        for number, statement in enumerate(statements, start=1):
            if _INLINE_INSERT.match(statement):
                raise MigrationError(
                    f"{self.path.name} statement {number}: INSERT with inline VALUES hangs on ClickHouse "
                    "18.16 through the native driver; write INSERT INTO ... SELECT ... instead")
        return statements


def split_statements(sql: str) -> list[str]:
    """Statements of a file: split where a line ends with ``;``; comment-only chunks are dropped."""
    out = []
    for chunk in _STATEMENT_END.split(sql):
        code = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
        if code:
            out.append(code)
    return out


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migration files of ``directory`` in version order; any other ``.sql`` name is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(Path(directory).glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lowercase_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version:04d} is also {found[version].path.name}")
        found[version] = Migration(version, match.group(2), path, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _ensure_table(client: Client, table: str) -> None:
    if "." not in table:
        raise ValueError(f"migrations table must be database-qualified, got {table!r}")
    database = table.split(".", 1)[0]
    client.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.execute(
        f"CREATE TABLE IF NOT EXISTS {table} "
        "(version UInt32, name String, checksum String, applied_at DateTime) "
        "ENGINE = MergeTree ORDER BY version")


def applied(client: Client, table: str = TABLE) -> dict[int, tuple[str, str]]:
    """version -> (name, checksum) of the migrations recorded on the server."""
    _ensure_table(client, table)
    rows = client.execute(f"SELECT version, name, checksum FROM {table} ORDER BY version")
    return {int(version): (name, checksum) for version, name, checksum in rows}


def _record(client: Client, table: str, migration: Migration) -> None:
    """Note on this server that ``migration`` is applied (after all its statements succeeded)."""
    client.execute(f"INSERT INTO {table} (version, name, checksum, applied_at) VALUES",
                   [(migration.version, migration.name, migration.checksum, datetime.now(UTC))])


def apply_migrations(client: Client, directory: Path = MIGRATIONS_DIR, table: str = TABLE) -> list[str]:
    """Apply the migrations of ``directory`` not yet recorded; returns their labels (e.g. '0001_database').

    Checks every already-applied file first, so an edited file stops the run before anything new
    is executed. ``table`` (database.table) records what was applied; tests use their own.
    """
    migrations = discover(directory)
    for migration in migrations:
        migration.statements()  # reject unrunnable files before anything is executed
    done = applied(client, table)
    for migration in migrations:
        recorded = done.get(migration.version)
        if recorded is not None and recorded[1] != migration.checksum:
            raise MigrationError(
                f"{migration.path.name} changed after it was applied (checksum {recorded[1][:12]} on the "
                f"server, {migration.checksum[:12]} in the file): add a new migration instead of editing it")
    known = {m.version for m in migrations}
    for version, (name, _checksum) in sorted(done.items()):
        if version not in known:
            log.warning("migrate: %04d_%s is recorded on the server but its file is missing", version, name)

    applied_now = []
    for migration in migrations:
        if migration.version in done:
            continue
        for number, statement in enumerate(migration.statements(), start=1):
            try:
                client.execute(statement)
            except Exception as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise MigrationError(f"{migration.path.name} statement {number} failed: {reason}") from exc
        _record(client, table, migration)
        log.info("migrate: applied %s", migration.label)
        applied_now.append(migration.label)
    return applied_now


# --- replicated cluster ------------------------------------------------------------------------------


def _unquote(name: str) -> str:
    return name.replace("`", "").replace('"', "")


def _closing_paren(text: str, opening: int) -> int:
    """Index of the parenthesis closing the one at ``opening`` (engine arguments may nest calls)."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses after {text[opening:opening + 40]!r}")


def replicated_statement(statement: str) -> str:
    """``statement`` for a replicated cluster: a CREATE whose engine is of the MergeTree family gets
    its Replicated* form, ``XMergeTree(args)`` -> ``ReplicatedXMergeTree('<zk path>', '{replica}',
    args)``; every other statement (and an engine already Replicated) comes back unchanged.

    Pure, so the single-server files stay the one source of the schema and the rewrite is tested
    without a server. The ZooKeeper path names the table with its database, as ClickHouse's docs
    advise, so two tables never share a path; the CREATE must therefore name its database.
    """
    create = _CREATE.match(statement)
    engine = _MERGE_TREE_ENGINE.search(statement)
    if create is None or engine is None or engine.group(1).lower().startswith("replicated"):
        return statement
    table = _unquote(create.group(1))
    if "." not in table:
        raise ValueError(f"CREATE of {table!r}: name the table with its database (db.table) so its "
                         "replicated form gets a distinct ZooKeeper path")
    params = [f"'{ZOOKEEPER_PATH % table}'", f"'{REPLICA_NAME}'"]
    rest = engine.end()
    while rest < len(statement) and statement[rest] in " \t":
        rest += 1
    if rest < len(statement) and statement[rest] == "(":
        close = _closing_paren(statement, rest)
        inner = statement[rest + 1:close].strip()
        params += [inner] if inner else []
        rest = close + 1
    else:
        rest = engine.end()
    return (f"{statement[:engine.start()]}ENGINE = Replicated{engine.group(1)}MergeTree({', '.join(params)})"
            f"{statement[rest:]}")


def replicated_by_table(statement: str) -> str | None:
    """The table of an ALTER / INSERT / OPTIMIZE / TRUNCATE: on a Replicated table ClickHouse passes
    these on to the other replicas itself, so they run on one replica only; None for any other
    statement (CREATE, DROP, ...), which every replica runs for itself."""
    match = _REPLICATED_BY_TABLE.match(statement)
    return _unquote(match.group(1)) if match else None


def distributed_statements(cluster: str, source: str, target: str) -> list[str]:
    """DDL of ``target``, a Distributed table over ``cluster`` reading ``source`` on each shard.

    Dropped and created again rather than altered: it holds no data, and ``AS source`` gives it
    exactly the source's current columns (18.16 cannot ALTER a Distributed table's columns)."""
    database, table = source.split(".", 1)
    return [f"DROP TABLE IF EXISTS {target}",
            f"CREATE TABLE {target} AS {source} ENGINE = Distributed({cluster}, {database}, {table})"]


@dataclass
class Replica:
    """One server of the cluster, and its own client (no failover: each replica is migrated itself)."""

    address: str
    client: Client


def _engine(client: Client, table: str) -> str:
    database, name = table.split(".", 1)
    rows = client.execute("SELECT engine FROM system.tables WHERE database = %(d)s AND name = %(n)s",
                          {"d": database, "n": name})
    return rows[0][0] if rows else ""


def _columns(client: Client, table: str) -> list[tuple[str, str]]:
    database, name = table.split(".", 1)
    return [(column, kind) for column, kind in client.execute(
        "SELECT name, type FROM system.columns WHERE database = %(d)s AND table = %(n)s",
        {"d": database, "n": name})]


def _wait_replicated(first: Replica, others: Sequence[Replica], table: str) -> None:
    """Wait until every other replica has what ``first`` did to ``table``: its parts (SYSTEM SYNC
    REPLICA waits for the replication queue) and its columns (18.16 applies an ALTER outside the
    queue, so the columns are compared until they match)."""
    want = _columns(first.client, table)
    for replica in others:
        replica.client.execute(f"SYSTEM SYNC REPLICA {table}")
        deadline = time.monotonic() + REPLICA_SYNC_TIMEOUT_S
        while _columns(replica.client, table) != want:
            if time.monotonic() > deadline:
                raise MigrationError(f"replica {replica.address}: {table} did not receive the ALTER of "
                                     f"{first.address} within {REPLICA_SYNC_TIMEOUT_S:.0f} s")
            time.sleep(0.2)


def _execute(replica: Replica, migration: Migration, number: int, statement: str) -> None:
    try:
        replica.client.execute(statement)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(f"{migration.path.name} statement {number} failed on replica {replica.address}: "
                             f"{reason}") from exc


def _apply_on_replicas(migration: Migration, pending: list[Replica], fresh: bool) -> None:
    """Run one migration on the replicas that lack it, statement by statement (module doc).

    ``fresh``: no replica has it yet, so the statements ClickHouse replicates by itself still have
    to run (once); otherwise a replica that recorded it ran them already and they reached the rest.
    """
    for number, statement in enumerate(migration.statements(), start=1):
        statement = replicated_statement(statement)
        table = replicated_by_table(statement)
        if table is not None and _engine(pending[0].client, table).startswith("Replicated"):
            if fresh:
                _execute(pending[0], migration, number, statement)
            _wait_replicated(pending[0], pending[1:], table)
            continue
        for replica in pending:
            _execute(replica, migration, number, statement)


def apply_cluster_migrations(replicas: Sequence[Replica], cluster: str, directory: Path = MIGRATIONS_DIR,
                             table: str = TABLE) -> list[str]:
    """Apply the migrations of ``directory`` to every replica of ``cluster`` in their replicated form
    (module doc), then (re)create the Distributed tables; returns the labels applied anywhere.

    The checks of ``apply_migrations`` hold per replica: an edited file stops the run before
    anything new is executed on any replica.
    """
    migrations = discover(directory)
    for migration in migrations:
        for statement in migration.statements():
            try:
                replicated_statement(statement)
            except ValueError as exc:
                raise MigrationError(f"{migration.path.name}: {exc}") from exc
    done = {replica.address: applied(replica.client, table) for replica in replicas}
    for replica in replicas:
        for migration in migrations:
            recorded = done[replica.address].get(migration.version)
            if recorded is not None and recorded[1] != migration.checksum:
                raise MigrationError(
                    f"{migration.path.name} changed after it was applied on replica {replica.address}: "
                    "add a new migration instead of editing it")

    applied_now = []
    for migration in migrations:
        pending = [r for r in replicas if migration.version not in done[r.address]]
        if not pending:
            continue
        _apply_on_replicas(migration, pending, fresh=len(pending) == len(replicas))
        for replica in pending:
            _record(replica.client, table, migration)
        log.info("migrate: applied %s on %d replicas", migration.label, len(pending))
        applied_now.append(migration.label)
    _ensure_distributed(replicas, cluster)
    return applied_now


def _ensure_distributed(replicas: Sequence[Replica], cluster: str) -> None:
    """Each replica's Distributed tables, created again when their columns no longer match the
    source's (a migration altered it) or they name another cluster."""
    for replica in replicas:
        for source, target in DISTRIBUTED_TABLES.items():
            if not _engine(replica.client, source):
                continue
            database, name = target.split(".", 1)
            current = replica.client.execute(
                "SELECT engine_full FROM system.tables WHERE database = %(d)s AND name = %(n)s",
                {"d": database, "n": name})
            same_cluster = bool(current) and f"Distributed({cluster}," in current[0][0]
            if same_cluster and _columns(replica.client, target) == _columns(replica.client, source):
                continue
            for statement in distributed_statements(cluster, source, target):
                replica.client.execute(statement)


def migrate(ch: ClickHouseSettings, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations where ``ch`` points: one server, or every replica of ``ch.cluster``.

    The one entry of ``callback migrate`` and of the local stack's provisioning, so both create the
    same tables for the same settings.
    """
    from callback.clickhouse_io import clickhouse_client

    if not ch.cluster:
        client = clickhouse_client(ch, send_receive_timeout=STATEMENT_TIMEOUT_S)
        try:
            return apply_migrations(client, directory)
        finally:
            client.disconnect()
    replicas = [Replica(f"{host}:{port}",
                        clickhouse_client(ch.model_copy(update={"host": host, "port": port, "alt_hosts": ""}),
                                          send_receive_timeout=STATEMENT_TIMEOUT_S))
                for host, port in ch.replica_addresses()]
    try:
        return apply_cluster_migrations(replicas, ch.cluster, directory)
    finally:
        for replica in replicas:
            replica.client.disconnect()
