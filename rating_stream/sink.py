"""``callback cdr-sink``: rated CDRs from Kafka into ClickHouse, in batches, losing nothing.

The loop is ``callback/stage_loop.py``'s, shared with the rater: it consumes, keeps the offsets,
checkpoints (flush → produce → commit with ``ConsumerCommit``), pauses the consumer while an insert
waits for ClickHouse, re-reads after a failed commit, replaces a failed consumer and checkpoints
before a revocation. The sink says what a batch is and what storing it means:

* read_committed: only CDRs of committed rater transactions are stored;
* a batch is flushed as one columnar INSERT when it reaches ``batch_max`` rows, or when the input
  runs dry (nothing more is waiting on Kafka) but not sooner than ``min_flush_interval_s`` after
  the previous insert, or at the latest ``flush_interval_s`` after its first row. Under load the
  batches grow by themselves (one insert is in flight; the next batch gathers meanwhile), and a
  quiet stream's CDRs reach ClickHouse within about a tenth of a second instead of a second; the
  minimum interval keeps a trickle from becoming an insert per row (ClickHouse wants few, large
  inserts: raise it on a cluster that merges slowly);
* offsets are committed synchronously only after the INSERT succeeded, so a crash re-inserts at
  most the last two batches, which ``ReplacingMergeTree`` collapses (identical leg_id and version);
* one INSERT is in flight at a time, in a worker thread, while the next batch is read and parsed:
  the driver waits on the socket without the GIL, so reading and storing overlap instead of taking
  turns; the next batch is sent only after the previous one was stored and its offsets committed;
* while ClickHouse is down the insert is retried with capped exponential backoff and the consumer
  is paused (still polled, so the group does not drop it): nothing is skipped, nothing lost;
* a retry sends the very same block: ``inserted_at`` is filled once per batch by the sink, not by
  the server's ``now()`` at each attempt, so on Replicated tables (a replicated cluster, see
  docs/analytics.md) ClickHouse's block deduplication stores a batch that reached the server before
  the failure only once, also when the retry lands on another replica (``alt_hosts``), and the
  materialized views get it once too;
* a record that is not a valid CDR goes to ``dlq.cdr.rated`` with the reason and never stops it;
* neither does a row ClickHouse refuses (a value its column cannot hold, from a CDR written by an
  older rater or by hand): an insert that fails for any reason but the server being unreachable
  (``_unreachable``) is split in halves, recursively, until the refused rows are alone; each goes
  to ``dlq.cdr.rated`` with the refusal (``refused_by_clickhouse``) and its original bytes, the
  others are stored, and the offsets are committed;
* a failed commit is not fatal: after a broker pause or a rebalance the group may have dropped
  this member (``UNKNOWN_MEMBER_ID``), and then the batch is simply read again, by this member or
  the partition's new owner, and inserted again, which ``ReplacingMergeTree`` collapses;
* a consumer that fails for good is replaced, never a reason to exit: after a broker pause longer
  than the session timeout, librdkafka's static member may be "fenced by other consumer with same
  group.instance.id" (its own rejoin); the sink then drops what it had not committed, closes the
  consumer, and subscribes a new one after a backoff, which reads those CDRs again;
* static membership: ``group.instance.id`` is ``<group>-<instance>`` (``--instance``), so each sink
  of a group needs its own instance name (the same name twice fences the first, and the two then
  keep replacing each other, which the log says every time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import msgspec
from clickhouse_driver import errors as ch_errors
from confluent_kafka import Consumer, Message, Producer

from callback.clickhouse_io import clickhouse_client
from callback.kafka_io import consumer_config, dead_letter, producer_config
from callback.stage_loop import Abandoned, ConsumerCommit, Pace, Stage, StageLoop
from rating_stream import metrics
from rating_stream.cdr import CDR_COLUMNS, cdr_row
from schemas.topics import CDR_RATED

log = logging.getLogger(__name__)

RowFn = Callable[[bytes], tuple]

#: how long to wait for an insert before pausing the consumer (well under max.poll.interval.ms)
_PATIENCE_S = 2.0

#: Failures that say nothing about the rows: the server is unreachable, overloaded, restarting, or
#: its table is not there (yet). The insert is retried as it is, with backoff, never split.
_UNREACHABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (socket.timeout is an OSError)
    EOFError,
    ch_errors.NetworkError,
    ch_errors.SocketTimeoutError,
    ch_errors.UnexpectedPacketFromServerError,
    ch_errors.UnknownPacketFromServerError,
    ch_errors.ChecksumDoesntMatchError,
    ch_errors.PartiallyConsumedQueryError,
)
#: ClickHouse error codes of the same kind, sent by a server that answers
_UNREACHABLE_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        16,  # NO_SUCH_COLUMN_IN_TABLE: migrations not applied yet
        60,  # UNKNOWN_TABLE
        81,  # UNKNOWN_DATABASE
        159,  # TIMEOUT_EXCEEDED
        164,  # READONLY
        173,  # CANNOT_ALLOCATE_MEMORY
        192, 193, 194, 195, 497, 516,  # users and access
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        285, 286, 319,  # replicas and quorum
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION (I/O)
    }
)


def _unreachable(exc: BaseException) -> bool:
    """Whether a failed insert would succeed as it is once the server is back (retry), as opposed
    to ClickHouse refusing some row of it (split the batch and set that row aside)."""
    if isinstance(exc, _UNREACHABLE_TYPES):
        return True
    return isinstance(exc, ch_errors.ServerException) and exc.code in _UNREACHABLE_CODES


def _why(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


@dataclass
class SinkOptions:
    group_id: str = "callback-cdr-sink"
    #: static group membership: a restarted sink takes its partitions back at once instead of
    #: waiting a session timeout for the dead member to be evicted. ``group.instance.id`` is
    #: ``<group_id>-<instance>``: every sink of a group needs its own instance name
    instance: str = "0"
    topic: str = CDR_RATED.name
    table: str = "callback.cdr"
    columns: tuple[str, ...] = CDR_COLUMNS
    batch_max: int = 20_000
    flush_interval_s: float = 1.0
    min_flush_interval_s: float = 0.1
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    idle_exit_s: float | None = None
    #: where unreadable records go: dlq.<dead_letter_source>
    dead_letter_source: str = CDR_RATED.name
    #: fill ``inserted_at`` once per batch (module doc: a retry is the same block); False for a
    #: table without that column (the rating bench's pass-through)
    stamp_inserted_at: bool = True


def insert_statement(options: SinkOptions) -> str:
    """The sink's INSERT, its columns in the order of ``insert_block``."""
    columns = (*options.columns, "inserted_at") if options.stamp_inserted_at else options.columns
    return f"INSERT INTO {options.table} ({', '.join(columns)}) VALUES"


def insert_block(rows: Sequence[tuple], stamp: int | None) -> list[Sequence]:
    """The columns the sink sends for ``rows``; ``stamp`` (when stamping) is the batch's
    ``inserted_at`` in epoch seconds, the same on every attempt, so every attempt is one identical
    block. An integer goes into a ``DateTime`` column as it is; a ``datetime`` would cost the driver
    a time-zone conversion per row (docs/rating.md, "Speed")."""
    columns: list[Sequence] = list(zip(*rows, strict=True))
    return columns + [[stamp] * len(rows)] if stamp is not None else columns


@dataclass
class _Stored:
    """A batch as ClickHouse took it: its records, and the rows refused (index in ``msgs``, why)."""

    msgs: list[Message]
    rows: int
    refused: list[tuple[int, str]]


class CdrSink(Stage):
    """The sink stage: the records are CDRs, a batch is up to ``batch_max`` rows, what was waiting,
    or ``flush_interval_s`` (module doc), its effect one INSERT on the insert thread, made durable by
    ``ConsumerCommit`` (the loop's order, ``callback/stage_loop.py``)."""

    noun = "CDRs"

    def __init__(
        self, options: SinkOptions, row: RowFn = cdr_row, on_stored: Callable[[int], None] | None = None
    ) -> None:
        self.opt = options
        self._row = row
        #: called with the running total after each batch is stored and committed (benchmark clock)
        self._on_stored = on_stored
        self._inserter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ch-insert")
        self.client = clickhouse_client()
        self._dlq: Producer | None = None
        self._rows: list[tuple] = []
        #: the record of each row in ``_rows``, for dead-lettering it if ClickHouse refuses it
        self._msgs: list[Message] = []
        self.inserted = 0
        #: due at ``batch_max`` rows, ``flush_interval_s`` after the first, or once the input ran dry
        #: ``min_flush_interval_s`` after the previous insert began (module doc)
        self.pace = Pace(options.batch_max, options.flush_interval_s, options.min_flush_interval_s)
        self._insert_sql = insert_statement(options)
        self.loop = StageLoop(
            self,
            self._new_consumer,
            ConsumerCommit(
                reread="these CDRs are stored and will be read and inserted again (FINAL collapses "
                "the copies)",
                on_failure=metrics.SINK_COMMIT_FAILURES.inc,
            ),
            topics=[options.topic],
            replace_failed=True,
            consume_max=min(options.batch_max, 10_000),
            consume_timeout_s=min(0.05, options.min_flush_interval_s or 0.05),
            idle_exit_s=options.idle_exit_s,
            patience_s=_PATIENCE_S,
            backoff_initial_s=options.backoff_initial_s,
            backoff_max_s=options.backoff_max_s,
        )

    def _new_consumer(self) -> Consumer:
        return Consumer(
            consumer_config(
                self.opt.group_id,
                read_committed=True,
                **{
                    "fetch.wait.max.ms": 100,
                    "queued.min.messages": 50_000,
                    "enable.partition.eof": False,
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                    "group.instance.id": f"{self.opt.group_id}-{self.opt.instance}",
                },
            )
        )

    @property
    def consumer(self) -> Consumer:
        return self.loop.consumer

    def stop(self, *_: object) -> None:
        self.loop.stop()

    def run(self) -> int:
        return self.loop.run()

    # --- the stage: what the loop does with a batch of CDRs ----------------------------------------
    def take(self, msg: Message) -> None:
        try:
            self._rows.append(self._row(msg.value()))
        except (msgspec.MsgspecError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # msgspec's ValidationError is a DecodeError too: JSON it read, but not a CDR
            malformed = isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError)
            kind = "malformed_json" if malformed else "invalid_schema"
            self._reject(msg, f"{type(exc).__name__}: {exc}", kind)
            return
        self._msgs.append(msg)

    def flush(self) -> Future[_Stored]:
        """Send the pending rows to ClickHouse on the insert thread (the loop has the batch before
        them stored and committed first)."""
        rows, msgs = self._rows, self._msgs
        self._rows, self._msgs = [], []
        return self._inserter.submit(lambda: _Stored(msgs, len(rows), self._store(rows)))

    def produce(self, stored: _Stored) -> None:
        """The refused rows to the dead-letter topic, delivered before the offsets are committed."""
        for index, reason in stored.refused:
            self._reject(stored.msgs[index], reason, "refused_by_clickhouse")
        if not self._deliver_dead_letters():
            log.warning("stopping with dead letters not delivered; offsets stay uncommitted and the "
                        "next run stores (or sets aside) those CDRs again")
            raise Abandoned

    def settled(self, stored: _Stored, committed: bool) -> None:
        """Count the stored rows, committed or not: a batch whose commit failed is stored already
        (read and inserted again, which FINAL collapses)."""
        rows = stored.rows - len(stored.refused)
        metrics.SINK_ROWS.inc(rows)
        self.inserted += rows
        log.debug("stored %d CDRs (%d refused), committed %s", rows, len(stored.refused), committed)
        if self._on_stored is not None:
            self._on_stored(self.inserted)

    def drop(self) -> None:
        self._rows, self._msgs = [], []

    def replaced(self) -> None:
        metrics.SINK_CONSUMER_REPLACED.inc()

    def close(self) -> None:
        self._inserter.shutdown(wait=True)
        if self._dlq is not None:
            self._dlq.flush(30)

    def _reject(self, msg: Message, reason: str, kind: str) -> None:
        if self._dlq is None:
            self._dlq = Producer(producer_config())
        dead_letter(
            self._dlq,
            source="cdr-sink",
            source_topic=self.opt.dead_letter_source,
            reason=reason,
            error_kind=kind,
            key=msg.key(),
            value=msg.value(),
            partition=msg.partition(),
            offset=msg.offset(),
            details={"topic": msg.topic()},
        )
        metrics.DEAD_LETTERS.labels("cdr-sink", kind).inc()

    def _deliver_dead_letters(self) -> bool:
        """Wait until every dead letter is on Kafka (offsets are committed only after); False when
        the sink is stopping first."""
        if self._dlq is None:
            return True
        while self._dlq.flush(5) > 0:
            if self.loop.stopping:
                return False
            log.warning("%d dead letters not delivered yet (is Kafka reachable?); waiting before "
                        "committing", len(self._dlq))
        return True

    def _store(self, rows: list[tuple]) -> list[tuple[int, str]]:
        """Runs in the insert thread: store ``rows``, all but the ones ClickHouse refuses, which are
        returned as (index, refusal). An unreachable server is waited for (``_insert``); a refusal
        splits the rows in halves until each refused row is alone."""
        refused: list[tuple[int, str]] = []
        pending = [(0, len(rows))] if rows else []
        stamp = int(time.time()) if self.opt.stamp_inserted_at else None
        while pending:
            low, high = pending.pop()
            exc = self._insert(rows[low:high], stamp)
            if exc is None:
                continue
            if high - low == 1:
                log.error("ClickHouse refused a CDR (%s); it goes to the dead-letter topic", _why(exc))
                refused.append((low, _why(exc)))
                continue
            if low == 0 and high == len(rows):
                log.warning("ClickHouse refused the insert of %d CDRs (%s); splitting it to set the "
                            "refused rows aside", len(rows), _why(exc))
            middle = (low + high) // 2
            pending += [(middle, high), (low, middle)]
        return refused

    def _insert(self, rows: list[tuple], stamp: int | None) -> BaseException | None:
        """Insert ``rows``, retrying while ClickHouse is unreachable (until the sink stops, then
        ``Abandoned``); returns None when stored, or the refusal when ClickHouse refused them."""
        columns = insert_block(rows, stamp)
        delay = self.opt.backoff_initial_s
        while True:
            try:
                self.client.execute(self._insert_sql, columns, columnar=True)
                return None
            except Exception as exc:  # noqa: BLE001 - sorted below: unreachable or refused
                self.client.disconnect()
                if not _unreachable(exc):
                    return exc
                metrics.SINK_RETRIES.inc()
                log.warning(
                    "insert of %d CDRs into %s failed (%s); retrying in %.1f s",
                    len(rows),
                    self.opt.table,
                    _why(exc),
                    delay,
                )
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if self.loop.stopping:
                        raise Abandoned from exc
                    time.sleep(0.05)
                delay = min(delay * 2, self.opt.backoff_max_s)


def run_sink(options: SinkOptions) -> int:
    return CdrSink(options).run()
