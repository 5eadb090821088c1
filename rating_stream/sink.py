"""``callback cdr-sink``: rated CDRs from Kafka into ClickHouse, in batches, losing nothing.

* read_committed: only CDRs of committed rater transactions are stored;
* a batch is flushed at ``batch_max`` rows or ``flush_interval_s`` seconds, as one columnar
  INSERT (ClickHouse wants thousands of rows per insert, never a row per insert);
* offsets are committed synchronously only after the INSERT succeeded, so a crash re-inserts at
  most the last batch, which ``ReplacingMergeTree`` collapses (identical leg_id and version);
* while ClickHouse is down the insert is retried with capped exponential backoff and the consumer
  is paused (still polled, so the group does not drop it): nothing is skipped, nothing lost;
* a record that is not a valid CDR goes to ``dlq.cdr.rated`` with the reason and never stops it.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
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


class CdrSink:
    def __init__(self, options: SinkOptions, row: RowFn = cdr_row) -> None:
        self.opt = options
        self._row = row
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
                if self._due():
                    self.flush()
                elif (
                    not self._rows
                    and self.opt.idle_exit_s is not None
                    and time.monotonic() - idle_since > self.opt.idle_exit_s
                ):
                    log.info("no CDRs for %.0f s, exiting", self.opt.idle_exit_s)
                    break
            self.flush()
        finally:
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

    def flush(self) -> None:
        """Insert the pending rows (retrying until ClickHouse takes them), then commit offsets."""
        if not self._offsets:
            return
        if self._rows:
            self._insert_with_retry(self._rows)
        if self._dlq is not None and self._dlq.flush(30) > 0:
            raise RuntimeError("dead letters not delivered; not committing offsets")
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        self.consumer.commit(offsets=offsets, asynchronous=False)
        metrics.SINK_ROWS.inc(len(self._rows))
        self.inserted += len(self._rows)
        log.debug("stored %d CDRs, committed %s", len(self._rows), offsets)
        self._rows, self._offsets, self._first_at = [], {}, None
        late, self._late = self._late, []
        for msg in late:  # records a paused consumer still handed out while we retried
            self._add(msg)

    def _insert_with_retry(self, rows: list[tuple]) -> None:
        columns = list(zip(*rows, strict=True))
        delay = self.opt.backoff_initial_s
        paused = False
        try:
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
                    if not paused:
                        self.consumer.pause(self.consumer.assignment())
                        paused = True
                    self._late.extend(_sleep_polling(self.consumer, delay))
                    delay = min(delay * 2, self.opt.backoff_max_s)
        finally:
            if paused:
                self.consumer.resume(self.consumer.assignment())

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Store what was read before the partitions go to another member, so it is not lost
        (it would be re-read anyway) nor inserted twice by two members."""
        if self._offsets:
            log.info("partitions revoked: flushing %d pending CDRs first", len(self._rows))
            self.flush()


def _sleep_polling(consumer: Consumer, seconds: float) -> list[Message]:
    """Wait while still polling the paused consumer, so it keeps its group membership.

    A paused consumer should hand out nothing; whatever it still does is returned, to be stored
    with the next batch rather than dropped."""
    late: list[Message] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        late.extend(consumer.consume(num_messages=1000, timeout=min(left, 0.5)))
    return late


def run_sink(options: SinkOptions) -> int:
    return CdrSink(options).run()
