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
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickhouse_driver import Client

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
        client.execute(f"INSERT INTO {table} (version, name, checksum, applied_at) VALUES",
                       [(migration.version, migration.name, migration.checksum, datetime.now(UTC))])
        log.info("migrate: applied %s", migration.label)
        applied_now.append(migration.label)
    return applied_now
