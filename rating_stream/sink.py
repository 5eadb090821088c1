"""``callback cdr-sink``: rated CDRs from Kafka into ClickHouse, in batches, losing nothing.

* read_committed: only CDRs of committed rater transactions are stored;
* a batch is flushed at ``batch_max`` rows or ``flush_interval_s`` seconds, as one columnar
  INSERT (ClickHouse wants thousands of rows per insert, never a row per insert);
* offsets are committed synchronously only after the INSERT succeeded, so a crash re-inserts at
  most the last two batches, which ``ReplacingMergeTree`` collapses (identical leg_id and version);
* one INSERT is in flight at a time, in a worker thread, while the next batch is read and parsed:
  the driver waits on the socket without the GIL, so reading and storing overlap instead of taking
  turns; the next batch is sent only after the previous one was stored and its offsets committed;
* while ClickHouse is down the insert is retried with capped exponential backoff and the consumer
  is paused (still polled, so the group does not drop it): nothing is skipped, nothing lost;
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
import signal
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import orjson
from clickhouse_driver import errors as ch_errors
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from callback.clickhouse_io import clickhouse_client
from callback.kafka_io import ConsumerFailed, consumer_config, dead_letter, is_record, producer_config
from rating_stream import metrics
from rating_stream.cdr import CDR_COLUMNS, cdr_row
from schemas.topics import CDR_RATED

log = logging.getLogger(__name__)

RowFn = Callable[[dict], tuple]

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
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    idle_exit_s: float | None = None
    #: where unreadable records go: dlq.<dead_letter_source>
    dead_letter_source: str = CDR_RATED.name


class _Abandoned(Exception):
    """The sink is stopping while ClickHouse cannot be reached: leave the batch for the next run."""


@dataclass
class _InFlight:
    """The batch being inserted: committed (its offsets) only once ``done`` says it is stored.

    ``done`` yields the rows ClickHouse refused: (index in ``msgs``, the refusal)."""

    done: Future[list[tuple[int, str]]]
    rows: int
    offsets: dict[tuple[str, int], int]
    msgs: list[Message]


class CdrSink:
    def __init__(
        self, options: SinkOptions, row: RowFn = cdr_row, on_stored: Callable[[int], None] | None = None
    ) -> None:
        self.opt = options
        self._row = row
        #: called with the running total after each batch is stored and committed (benchmark clock)
        self._on_stored = on_stored
        self._inserter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ch-insert")
        self._inflight: _InFlight | None = None
        self._stopping = False
        self.client = clickhouse_client()
        self.consumer = self._new_consumer()
        #: the fatal error the consumer reported; the main loop replaces the consumer
        self._consumer_failed: KafkaError | None = None
        self._replace_delay_s = options.backoff_initial_s
        self._dlq: Producer | None = None
        self._rows: list[tuple] = []
        #: the record of each row in ``_rows``, for dead-lettering it if ClickHouse refuses it
        self._msgs: list[Message] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._first_at: float | None = None
        self._late: list[Message] = []
        self.inserted = 0
        self._insert_sql = f"INSERT INTO {options.table} ({', '.join(options.columns)}) VALUES"

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

    def stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.consumer.subscribe([self.opt.topic], on_revoke=self._on_revoke)
        idle_since = time.monotonic()
        try:
            while not self._stopping:
                if self._consumer_failed is not None:
                    self._replace_consumer()
                    continue
                msgs = self.consumer.consume(num_messages=min(self.opt.batch_max, 10_000), timeout=0.2)
                for msg in msgs:
                    self._add(msg)
                if msgs:
                    idle_since = time.monotonic()
                if self._inflight is not None and self._inflight.done.done():
                    self._complete_inflight()
                if self._due():
                    self.flush()
                elif (
                    not self._rows
                    and self._inflight is None
                    and self.opt.idle_exit_s is not None
                    and time.monotonic() - idle_since > self.opt.idle_exit_s
                ):
                    log.info("no CDRs for %.0f s, exiting", self.opt.idle_exit_s)
                    break
            self.flush()
            self._complete_inflight()
        finally:
            self._stopping = True  # an insert still retrying gives up; its offsets stay uncommitted
            self._inserter.shutdown(wait=True)
            self.consumer.close()
            if self._dlq is not None:
                self._dlq.flush(30)
        return 0

    def _due(self) -> bool:
        if not self._offsets:
            return False
        return (
            len(self._rows) >= self.opt.batch_max
            or time.monotonic() - (self._first_at or 0) >= self.opt.flush_interval_s
        )

    def _add(self, msg: Message) -> None:
        try:
            if not is_record(msg, "cdr-sink consumer"):
                return
        except ConsumerFailed as exc:
            self._consumer_failed = exc.args[0]
            return
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        try:
            self._rows.append(self._row(orjson.loads(msg.value())))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            kind = "malformed_json" if isinstance(exc, orjson.JSONDecodeError) else "invalid_schema"
            self._reject(msg, f"{type(exc).__name__}: {exc}", kind)
            return
        self._msgs.append(msg)

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

    def flush(self, poll_while_waiting: bool = True) -> None:
        """Send the pending rows to ClickHouse, after the batch before them is stored and committed."""
        if not self._offsets:
            return
        self._complete_inflight(poll_while_waiting)
        rows, msgs = self._rows, self._msgs
        done = self._inserter.submit(self._store, rows)
        self._inflight = _InFlight(done, len(rows), self._offsets, msgs)
        self._rows, self._msgs, self._offsets, self._first_at = [], [], {}, None

    def _complete_inflight(self, poll_while_waiting: bool = True) -> None:
        """Wait until the batch in flight is stored, then commit its offsets (never before)."""
        inflight = self._inflight
        if inflight is None:
            return
        # the usual case: the insert is about done; wait without touching the consumer (pausing
        # would drop its prefetched records, to be fetched again)
        futures.wait([inflight.done], timeout=_PATIENCE_S)
        if not inflight.done.done() and poll_while_waiting:
            # ClickHouse is slow or down: stop fetching, but keep polling so the group keeps us
            self.consumer.pause(self.consumer.assignment())
            try:
                while not inflight.done.done():
                    self._late.extend(self.consumer.consume(num_messages=1000, timeout=0.2))
            finally:
                self.consumer.resume(self.consumer.assignment())
        if self._inflight is not inflight:
            return  # a rebalance callback, run while we polled, completed it already
        self._inflight = None
        try:
            refused = inflight.done.result()
        except _Abandoned:
            log.warning("stopping with %d CDRs not stored; their offsets stay uncommitted and the "
                        "next run stores them", inflight.rows)
            return
        for index, reason in refused:
            self._reject(inflight.msgs[index], reason, "refused_by_clickhouse")
        if not self._deliver_dead_letters():
            log.warning("stopping with dead letters not delivered; offsets stay uncommitted and the "
                        "next run stores (or sets aside) those CDRs again")
            return
        stored = inflight.rows - len(refused)
        self._commit(inflight.offsets)
        metrics.SINK_ROWS.inc(stored)
        self.inserted += stored
        log.debug("stored %d CDRs (%d refused), offsets %s", stored, len(refused), inflight.offsets)
        if self._on_stored is not None:
            self._on_stored(self.inserted)
        late, self._late = self._late, []
        for msg in late:  # records a paused consumer still handed out while we waited
            self._add(msg)

    def _deliver_dead_letters(self) -> bool:
        """Wait until every dead letter is on Kafka (offsets are committed only after); False when
        the sink is stopping first."""
        if self._dlq is None:
            return True
        while self._dlq.flush(5) > 0:
            if self._stopping:
                return False
            log.warning("%d dead letters not delivered yet (is Kafka reachable?); waiting before "
                        "committing", len(self._dlq))
        return True

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit after the insert. A failure that is not fatal is a lost membership (a broker
        pause longer than the session timeout, a rebalance): the records are read again, by us or
        the partition's new owner, and inserted again, which ReplacingMergeTree collapses."""
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self.consumer.commit(offsets=partitions, asynchronous=False)
            self._replace_delay_s = self.opt.backoff_initial_s
        except KafkaException as exc:
            err = exc.args[0]
            metrics.SINK_COMMIT_FAILURES.inc()
            if err.fatal() or err.code() == KafkaError._FATAL:
                self._consumer_failed = err
                log.warning("commit of offsets %s failed for good (%s); these CDRs are stored and will "
                            "be read and inserted again by a new consumer", offsets, err.str())
                return
            log.warning(
                "commit of offsets %s failed (%s): the group dropped this member or moved its "
                "partitions (broker pause, rebalance); these CDRs are stored and will be read and "
                "inserted again (FINAL collapses the copies)",
                offsets,
                err.str(),
            )

    def _store(self, rows: list[tuple]) -> list[tuple[int, str]]:
        """Runs in the insert thread: store ``rows``, all but the ones ClickHouse refuses, which are
        returned as (index, refusal). An unreachable server is waited for (``_insert``); a refusal
        splits the rows in halves until each refused row is alone."""
        refused: list[tuple[int, str]] = []
        pending = [(0, len(rows))] if rows else []
        while pending:
            low, high = pending.pop()
            exc = self._insert(rows[low:high])
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

    def _insert(self, rows: list[tuple]) -> BaseException | None:
        """Insert ``rows``, retrying while ClickHouse is unreachable (until the sink stops, then
        ``_Abandoned``); returns None when stored, or the refusal when ClickHouse refused them."""
        columns = list(zip(*rows, strict=True))
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
                    if self._stopping:
                        raise _Abandoned from exc
                    time.sleep(0.05)
                delay = min(delay * 2, self.opt.backoff_max_s)

    def _replace_consumer(self) -> None:
        """Close the consumer that failed for good and subscribe a new one, after a backoff.

        The batch in flight is waited for (its rows are stored) but not committed; the rows read
        but not sent are dropped. The new consumer starts at the committed offsets, so all of them
        are read again and stored again, which ``ReplacingMergeTree`` collapses."""
        err = self._consumer_failed
        log.error("the Kafka consumer failed for good (%s); replacing it in %.1f s, and reading the "
                  "%d CDRs not committed again", err.str() if err else "?", self._replace_delay_s,
                  len(self._rows) + (self._inflight.rows if self._inflight else 0))
        metrics.SINK_CONSUMER_REPLACED.inc()
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            try:
                inflight.done.result()
            except _Abandoned:
                pass
        self._rows, self._msgs, self._offsets, self._first_at, self._late = [], [], {}, None, []
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the failed consumer: %s", exc)
        deadline = time.monotonic() + self._replace_delay_s
        while time.monotonic() < deadline and not self._stopping:
            time.sleep(0.05)
        self._replace_delay_s = min(self._replace_delay_s * 2, self.opt.backoff_max_s)
        self.consumer = self._new_consumer()
        self._consumer_failed = None
        self.consumer.subscribe([self.opt.topic], on_revoke=self._on_revoke)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Store what was read before the partitions go to another member, so it is not lost
        (it would be re-read anyway) nor inserted twice by two members."""
        if self._offsets or self._inflight is not None:
            log.info("partitions revoked: storing %d pending CDRs first", len(self._rows))
            # inside a consumer callback: wait without polling the consumer again
            self.flush(poll_while_waiting=False)
            self._complete_inflight(poll_while_waiting=False)


def run_sink(options: SinkOptions) -> int:
    return CdrSink(options).run()
