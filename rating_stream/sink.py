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
* a record that is not a valid CDR goes to ``dlq.cdr.rated`` with the reason and never stops it.
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
from clickhouse_driver import Client
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from callback.kafka_io import consumer_config, dead_letter, producer_config
from callback.settings import get_settings
from rating_stream import metrics
from rating_stream.cdr import CDR_COLUMNS, cdr_row
from schemas.topics import CDR_RATED

log = logging.getLogger(__name__)

RowFn = Callable[[dict], tuple]

#: how long to wait for an insert before pausing the consumer (well under max.poll.interval.ms)
_PATIENCE_S = 2.0


@dataclass
class SinkOptions:
    group_id: str = "callback-cdr-sink"
    #: static group membership: a restarted sink takes its partitions back at once instead of
    #: waiting a session timeout for the dead member to be evicted
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


def clickhouse_client() -> Client:
    ch = get_settings().clickhouse
    return Client(
        host=ch.host,
        port=ch.port,
        user=ch.user,
        password=ch.password,
        connect_timeout=5,
        send_receive_timeout=60,
        settings={"insert_block_size": 100_000},
    )


class _Abandoned(Exception):
    """The sink is stopping while ClickHouse refuses a batch: leave it for the next run."""


@dataclass
class _InFlight:
    """The batch being inserted: committed (its offsets) only once ``done`` says it is stored."""

    done: Future[None]
    rows: int
    offsets: dict[tuple[str, int], int]


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
        self.consumer = Consumer(
            consumer_config(
                options.group_id,
                read_committed=True,
                **{
                    "fetch.wait.max.ms": 100,
                    "queued.min.messages": 50_000,
                    "enable.partition.eof": False,
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                    "group.instance.id": f"{options.group_id}-{options.instance}",
                },
            )
        )
        self._dlq: Producer | None = None
        self._rows: list[tuple] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self._first_at: float | None = None
        self._late: list[Message] = []
        self.inserted = 0
        self._insert_sql = f"INSERT INTO {options.table} ({', '.join(options.columns)}) VALUES"

    def stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.consumer.subscribe([self.opt.topic], on_revoke=self._on_revoke)
        idle_since = time.monotonic()
        try:
            while not self._stopping:
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
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", err)
            return
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        try:
            self._rows.append(self._row(orjson.loads(msg.value())))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._reject(msg, exc)

    def _reject(self, msg: Message, exc: Exception) -> None:
        if self._dlq is None:
            self._dlq = Producer(producer_config())
        kind = "malformed_json" if isinstance(exc, orjson.JSONDecodeError) else "invalid_schema"
        dead_letter(
            self._dlq,
            source="cdr-sink",
            source_topic=self.opt.dead_letter_source,
            reason=f"{type(exc).__name__}: {exc}",
            error_kind=kind,
            key=msg.key(),
            value=msg.value(),
            partition=msg.partition(),
            offset=msg.offset(),
        )
        metrics.DEAD_LETTERS.labels("cdr-sink", kind).inc()

    def flush(self, poll_while_waiting: bool = True) -> None:
        """Send the pending rows to ClickHouse, after the batch before them is stored and committed."""
        if not self._offsets:
            return
        self._complete_inflight(poll_while_waiting)
        rows = self._rows
        done = self._inserter.submit(self._insert_with_retry, rows)
        self._inflight = _InFlight(done, len(rows), self._offsets)
        self._rows, self._offsets, self._first_at = [], {}, None

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
        self._inflight = None
        try:
            inflight.done.result()
        except _Abandoned:
            log.warning("stopping with %d CDRs not stored; their offsets stay uncommitted and the "
                        "next run stores them", inflight.rows)
            return
        if self._dlq is not None and self._dlq.flush(30) > 0:
            raise RuntimeError("dead letters not delivered; not committing offsets")
        offsets = [TopicPartition(t, p, o) for (t, p), o in inflight.offsets.items()]
        self.consumer.commit(offsets=offsets, asynchronous=False)
        metrics.SINK_ROWS.inc(inflight.rows)
        self.inserted += inflight.rows
        log.debug("stored %d CDRs, committed %s", inflight.rows, offsets)
        if self._on_stored is not None:
            self._on_stored(self.inserted)
        late, self._late = self._late, []
        for msg in late:  # records a paused consumer still handed out while we waited
            self._add(msg)

    def _insert_with_retry(self, rows: list[tuple]) -> None:
        """Runs in the insert thread: retry until ClickHouse takes the rows, or the sink stops."""
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        delay = self.opt.backoff_initial_s
        while True:
            try:
                self.client.execute(self._insert_sql, columns, columnar=True)
                return
            except Exception as exc:  # noqa: BLE001 - any failure: server down, timeout, ...
                metrics.SINK_RETRIES.inc()
                log.warning(
                    "insert of %d CDRs into %s failed (%s: %s); retrying in %.1f s",
                    len(rows),
                    self.opt.table,
                    type(exc).__name__,
                    str(exc).splitlines()[0][:200],
                    delay,
                )
                self.client.disconnect()
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if self._stopping:
                        raise _Abandoned from exc
                    time.sleep(0.05)
                delay = min(delay * 2, self.opt.backoff_max_s)

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
