"""``callback rating``: consume finished legs, price them, debit payers, exactly once.

One Kafka transaction per batch (thousands of legs): the CDRs (``cdr.rated``), the payers' new
balances (``accounts.balances``), any dead letters and the consumer offsets of the batch are
committed together or not at all. A crash anywhere leaves either the whole batch committed or
none of it; the restarted rater

1. calls ``init_transactions`` with the same ``transactional.id``, which fences a zombie and
   aborts its open transaction,
2. rebuilds its balances from ``accounts.balances`` and the recently charged leg ids from
   ``cdr.rated`` (read_committed, to the end), so memory equals what was committed,
3. resumes from the committed offsets.

Balances are single-writer state: one rater owns every partition of ``callback.legs`` (manual
assignment), because one payer's legs arrive on many partitions (legs are keyed by callback id).
Kafka enforces that: the transactional id is the group id alone, so a second rater started on the
same group (a mistaken second instance, or ``callback rerate``) fences the first, which exits,
instead of both charging every leg. Scaling out would need legs re-keyed by payer first.

A broker that stops answering (a pause, a restart, a network cut) is waited for, never a reason to
exit: a transactional call that times out is retried (librdkafka allows it), an abortable error
aborts the transaction and rewinds the consumer to the last committed offsets (the batch is rated
again), and a reference catch-up that fails does the same before any leg is dead-lettered. Only a
fatal error exits (being fenced, above): the supervisor restarts the rater, which reloads the
committed state.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from callback.kafka_io import consumer_config, dead_letter, is_record, producer_config
from callback.reference_feed import RATING_TOPICS as REFERENCE_TOPICS
from callback.reference_feed import ReferenceFeed
from callback.topic_reader import partitions_of, read_latest, read_to_end, since_time, state_consumer
from rating_stream import metrics
from rating_stream.batch import LEG_CLOCK_SKEW_S, RatingBatch, RecentLegs
from rating_stream.payer import Account, Ledger
from schemas.rating import BalanceUpdate
from schemas.topics import ACCOUNTS_BALANCES, CALLBACK_LEGS, CDR_RATED

log = logging.getLogger(__name__)

_FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
#: pause before reading a batch again whose reference catch-up could not reach Kafka
_RETRY_PAUSE_S = 1.0


@dataclass
class RaterOptions:
    instance: str = "0"
    group_id: str = "callback-rater"
    legs_topic: str = CALLBACK_LEGS.name
    cdr_topic: str = CDR_RATED.name
    balances_topic: str = ACCOUNTS_BALANCES.name
    #: topic whose dead-letter topic (dlq.<name>) receives unratable legs
    dead_letter_source: str = CALLBACK_LEGS.name
    reference_topics: tuple[str, ...] = REFERENCE_TOPICS
    #: actual topic -> catalogue topic, when reference data is read from copies (benchmark)
    reference_aliases: dict[str, str] = field(default_factory=dict)
    batch_max: int = 20_000
    batch_wait_s: float = 0.5
    dedupe_window_s: float = 6 * 3600.0
    txn_timeout_s: float = 60.0
    #: stop after this long without input (benchmarks, tests); None = run until signalled
    idle_exit_s: float | None = None

    @property
    def transactional_id(self) -> str:
        """One per group, not per instance: two raters on one group must fence, not both charge."""
        return self.group_id

    @property
    def source(self) -> str:
        return f"rating/{self.instance}"


class Rater:
    def __init__(self, options: RaterOptions) -> None:
        self.opt = options
        self.ledger = Ledger()
        self.recent = RecentLegs(options.dedupe_window_s, clock_skew_s=LEG_CLOCK_SKEW_S)
        self.reference = ReferenceFeed(options.reference_topics, options.reference_aliases)
        self._stopping = False
        self._positions: dict[int, int] = {}
        self.producer = Producer(
            producer_config(
                options.transactional_id,
                **{
                    "transaction.timeout.ms": int(options.txn_timeout_s * 1000),
                    "linger.ms": 20,
                    "queue.buffering.max.messages": 1_000_000,
                    "batch.size": 1_000_000,
                },
            )
        )
        self.consumer = Consumer(
            consumer_config(
                options.group_id,
                read_committed=True,
                **{"fetch.wait.max.ms": 50, "queued.min.messages": 50_000, "enable.partition.eof": False},
            )
        )

    # --- start-up ------------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        self.producer.init_transactions(self.opt.txn_timeout_s)  # fences a zombie with our id
        self.reference.load()
        self._restore_balances()
        self._restore_recent_legs()
        parts = partitions_of(self.consumer, self.opt.legs_topic)
        committed = self.consumer.committed(
            [TopicPartition(self.opt.legs_topic, p) for p in parts], timeout=30
        )
        self._positions = {
            tp.partition: (tp.offset if tp.offset >= 0 else OFFSET_BEGINNING) for tp in committed
        }
        self._rewind()
        log.info(
            "rater %s ready in %.1f s: %d balances, %d recent legs, partitions %s at %s",
            self.opt.transactional_id,
            time.monotonic() - t0,
            len(self.ledger),
            len(self.recent),
            parts,
            self._positions,
        )

    def _restore_balances(self) -> None:
        self.ledger = load_ledger(self.opt.balances_topic)

    def _restore_recent_legs(self) -> None:
        """The leg ids charged in the last ``dedupe_window_s``, from ``cdr.rated``: every charge the
        duplicate filter must know (``RecentLegs.horizon`` sends older legs to review)."""
        consumer = state_consumer("rater-recent")
        now = time.time()
        since_ms = int((now - self.opt.dedupe_window_s) * 1000)
        try:
            read_to_end(
                consumer,
                since_time(consumer, self.opt.cdr_topic, since_ms),
                lambda m: self.recent.add(m.key().decode(), (m.timestamp()[1] or since_ms) / 1000),
            )
        finally:
            consumer.close()

    def _rewind(self) -> None:
        """(Re)start consumption at the last committed offsets (after start-up or an abort)."""
        self.consumer.assign(
            [TopicPartition(self.opt.legs_topic, p, off) for p, off in self._positions.items()]
        )

    # --- main loop -----------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.start()
        idle_since = time.monotonic()
        try:
            while not self._stopping:
                msgs = self.consumer.consume(num_messages=self.opt.batch_max, timeout=self.opt.batch_wait_s)
                self.reference.poll()
                msgs = [m for m in msgs if is_record(m, "rater consumer")]  # a failed consumer ends it
                if not msgs:
                    if (
                        self.opt.idle_exit_s is not None
                        and time.monotonic() - idle_since > self.opt.idle_exit_s
                    ):
                        log.info("no legs for %.0f s, exiting", self.opt.idle_exit_s)
                        break
                    continue
                idle_since = time.monotonic()
                self.process(msgs)
        finally:
            self.consumer.close()
            self.reference.close()
        return 0

    def process(self, msgs: list[Message]) -> None:
        """Rate ``msgs`` and commit everything they cause in one transaction (or none of it)."""
        batch = RatingBatch(
            self.reference.data,
            self.ledger,
            self.recent,
            source=self.opt.source,
            rated_at=datetime.now(UTC),
            refresh=self.reference.catch_up,
        )
        try:
            for i, msg in enumerate(msgs):
                batch.add(i, msg.value())
        except (KafkaException, TimeoutError) as exc:  # only the reference catch-up reads Kafka
            log.warning(
                "could not bring reference data up to date (%s); rating these %d legs again from %s",
                exc,
                len(msgs),
                self._positions,
            )
            self._rewind()
            time.sleep(_RETRY_PAUSE_S)
            return
        result = batch.finish()
        offsets: dict[int, int] = {}
        for msg in msgs:
            offsets[msg.partition()] = max(offsets.get(msg.partition(), -1), msg.offset() + 1)
        if not self._transact(msgs, result, offsets):
            return
        batch.commit(time.time())
        self._positions.update(offsets)
        metrics.TRANSACTIONS.labels("committed").inc()
        for leg, n in result.rated_by_leg.items():
            metrics.LEGS_RATED.labels(leg).inc(n)
        metrics.LEGS_DUPLICATE.inc(result.duplicates)
        for _i, why in result.rejected:
            metrics.DEAD_LETTERS.labels("rater", why.error_kind).inc()
        if result.duplicates:  # one line per batch; each dropped leg is logged at DEBUG
            log.info(
                "dropped %d redelivered legs already charged, of %d legs in this batch",
                result.duplicates,
                len(msgs),
            )
        log.debug(
            "committed %d legs: %d CDRs, %d balances, %d dead letters, %d duplicates, charged %s",
            len(msgs),
            len(result.cdrs),
            len(result.balances),
            len(result.rejected),
            result.duplicates,
            result.charged,
        )

    def _produce_all(self, msgs: list[Message], result) -> None:
        produce = self.producer.produce
        cdr_topic, balances_topic = self.opt.cdr_topic, self.opt.balances_topic
        for key, value in result.cdrs:
            self._produce(produce, cdr_topic, key, value)
        for key, value in result.balances:
            self._produce(produce, balances_topic, key, value)
        for index, why in result.rejected:
            msg = msgs[index]
            dead_letter(
                self.producer,
                source=self.opt.source,
                source_topic=self.opt.dead_letter_source,
                reason=why.reason,
                error_kind=why.error_kind,
                key=msg.key(),
                value=msg.value(),
                partition=msg.partition(),
                offset=msg.offset(),
                details={"leg_id": why.leg_id, "topic": msg.topic()},
            )

    def _produce(self, produce, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                produce(topic, value, key)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _transact(self, msgs: list[Message], result, offsets: dict[int, int]) -> bool:
        """Produce the batch's outputs and commit them with its offsets in one transaction.

        True when committed. False when the transaction was aborted (an abortable error, or a
        broker that did not answer for longer than the transaction may last): the consumer is
        rewound and the batch will be read and rated again. A fatal error (fenced) raises."""
        try:
            self.producer.begin_transaction()
            self._produce_all(msgs, result)
            partitions = [TopicPartition(self.opt.legs_topic, p, o) for p, o in offsets.items()]
            self._retrying(
                "send_offsets_to_transaction",
                lambda: self.producer.send_offsets_to_transaction(
                    partitions, self.consumer.consumer_group_metadata(), self.opt.txn_timeout_s
                ),
            )
            self._retrying(
                "commit_transaction", lambda: self.producer.commit_transaction(self.opt.txn_timeout_s)
            )
            return True
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in _FENCED:
                log.critical(
                    "fenced: another process took transactional id %s (a newer rater instance, "
                    "or `callback rerate`); exiting without committing %d legs, a restart "
                    "reloads the committed state",
                    self.opt.transactional_id,
                    len(msgs),
                )
                raise
            if err.fatal():
                log.critical("fatal Kafka error in transaction, exiting: %s", err)
                raise
            log.warning(
                "transaction of %d legs aborted (%s); rewinding to %s", len(msgs), err, self._positions
            )
            metrics.TRANSACTIONS.labels("aborted").inc()
            self._abort()
            self._rewind()
            return False

    def _retrying(self, what: str, call) -> None:
        """``call`` again while it fails with a retriable error (a timeout: the broker did not answer
        in time), for as long as the transaction may last; any other error is raised."""
        deadline = time.monotonic() + self.opt.txn_timeout_s
        attempt = 0
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                err = exc.args[0]
                if (
                    not err.retriable()
                    or err.txn_requires_abort()
                    or err.fatal()
                    or self._stopping
                    or time.monotonic() > deadline
                ):
                    raise
                attempt += 1
                log.warning("%s attempt %d: %s; retrying", what, attempt, err)
                time.sleep(min(0.5 * attempt, 5.0))

    def _abort(self) -> None:
        """Abort the open transaction, waiting for the broker as long as it takes (unless stopping:
        the next start's ``init_transactions`` aborts it then)."""
        attempt = 0
        while True:
            try:
                self.producer.abort_transaction(self.opt.txn_timeout_s)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal():
                    log.critical("fatal Kafka error aborting a transaction, exiting: %s", err)
                    raise
                if err.code() == KafkaError._STATE:  # no transaction open (begin failed): done
                    return
                if not err.retriable() and not err.txn_requires_abort():
                    raise
                if self._stopping:
                    log.warning("stopping with a transaction not aborted (%s); the next start aborts it", err)
                    return
                attempt += 1
                log.warning("abort_transaction attempt %d: %s; retrying", attempt, err)
                time.sleep(min(0.5 * attempt, 5.0))


def load_ledger(topic: str) -> Ledger:
    """Balances as committed on the compacted ``topic`` (read_committed, to the end)."""
    ledger = Ledger()
    for update in read_latest(topic, BalanceUpdate, purpose="balances").values():
        ledger.restore(Account.from_update(update))
    return ledger


def read_balances(topic: str = ACCOUNTS_BALANCES.name) -> dict[str, BalanceUpdate]:
    """The latest committed balance of every payer on ``topic``: what a billing consumer sees (the
    demo's report and the tests compare it with the charges they expect)."""
    return read_latest(topic, BalanceUpdate, purpose="balances-reader")


def run_rater(options: RaterOptions) -> int:
    return Rater(options).run()
