"""``callback rating``: consume finished legs, price them, debit payers, exactly once.

One Kafka transaction per batch (thousands of legs): the CDRs (``cdr.rated``), one ledger entry
per charged leg (``accounts.ledger``), the payers' new balances (``accounts.balances``), any dead
letters and the consumer offsets of the batch are committed together or not at all. A crash
anywhere leaves either the whole batch committed or none of it; the restarted rater

1. calls ``init_transactions`` with the same ``transactional.id``, which fences a zombie and
   aborts its open transaction,
2. rebuilds its balances from ``accounts.balances`` and the recently charged leg ids from
   ``cdr.rated`` (read_committed, to the end), so memory equals what was committed,
3. resumes from the committed offsets.

Raters scale out in a consumer group (docs/deployment.md): ``callback.legs`` is keyed by payer,
so all of a payer's legs are on one partition and the member holding that partition is the only
writer of the payer's balance. ``callback rerate`` does not write balances itself: it publishes
``cdr.rerates``, keyed and partitioned like the legs (same count, range assignment), so the same
member applies a payer's corrections in its own transaction. Each member has its own
transactional id (``<group>-<instance>``): a restarted member aborts what it left open, and a
zombie member (one the group has moved on from) is fenced by the group generation its offsets
carry (KIP-447). On every assignment the member fetches its partitions' committed offsets, which
waits until a previous owner's open transaction is over, and only then reloads the balances and
the charged leg ids: what it reloads is all that was committed for its payers.

The loop is ``callback/stage_loop.py``'s, shared with the CDR sink: it consumes (its group's
partitions, from the committed offsets), hands each consume call's legs to the rater as one batch
(``flush``: rate it in memory, debits staged; a read returns what is waiting, so a batch
closes when the input runs dry, but no sooner than ``min_commit_interval_s`` after the previous
one began: a quiet stream's legs are charged within a tenth of a second, and a trickle is not a
transaction per leg), and commits with
``TransactionCommit``: the rater's ``produce`` (CDRs, balances, dead letters) and the offsets in
one transaction, after which ``settled`` merges the staged debits into memory.

A broker that stops answering (a pause, a restart, a network cut) is waited for, never a reason to
exit: a transactional call that times out is retried (librdkafka allows it), an abortable error
aborts the transaction and the loop rewinds the consumer to the last committed offsets (the batch
is rated again, the staged debits dropped), and a reference catch-up that fails does the same
(``Reread``) before any leg is dead-lettered. Only a fatal error exits (being fenced, above): the
supervisor restarts the rater, which reloads the committed state.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

from callback.kafka_io import consumer_config, dead_letter, producer_config
from callback.reference_feed import RATING_TOPICS as REFERENCE_TOPICS
from callback.reference_feed import ReferenceFeed
from callback.stage_loop import Pace, Reread, Stage, StageLoop, TransactionCommit, done_future
from callback.topic_reader import partitions_of, read_latest, read_to_end, since_time, state_consumer
from rating_stream import metrics
from rating_stream.batch import LEG_CLOCK_SKEW_S, BatchResult, RatingBatch, RecentLegs
from rating_stream.payer import Account, Ledger
from schemas.rating import BalanceUpdate, RerateRequest
from schemas.topics import ACCOUNTS_BALANCES, ACCOUNTS_LEDGER, CALLBACK_LEGS, CDR_RATED, CDR_RERATES

log = logging.getLogger(__name__)

#: pause before reading a batch again whose reference catch-up could not reach Kafka
_RETRY_PAUSE_S = 1.0
#: consumer replacements in a row without a commit that mean a second rater has our name
_TWIN_AFTER = 3


@dataclass
class RaterOptions:
    instance: str = "0"
    group_id: str = "callback-rater"
    legs_topic: str = CALLBACK_LEGS.name
    rerates_topic: str = CDR_RERATES.name
    cdr_topic: str = CDR_RATED.name
    balances_topic: str = ACCOUNTS_BALANCES.name
    ledger_topic: str = ACCOUNTS_LEDGER.name
    #: topic whose dead-letter topic (dlq.<name>) receives unratable legs
    dead_letter_source: str = CALLBACK_LEGS.name
    reference_topics: tuple[str, ...] = REFERENCE_TOPICS
    #: actual topic -> catalogue topic, when reference data is read from copies (benchmark)
    reference_aliases: dict[str, str] = field(default_factory=dict)
    #: a batch (one transaction) is what is waiting on Kafka when the rater reads, up to this many
    batch_max: int = 20_000
    #: how long a read waits for a first leg when none is waiting; never for more legs after it
    batch_wait_s: float = 0.5
    #: once nothing more is waiting, a transaction begins no sooner than this after the previous
    #: one: a trickle of legs is not a transaction each (every one costs the broker markers on each
    #: partition it wrote; at 500 legs/s a transaction per read took most of a core of the broker)
    min_commit_interval_s: float = 0.1
    dedupe_window_s: float = 6 * 3600.0
    txn_timeout_s: float = 60.0
    #: stop after this long without input (benchmarks, tests); None = run until signalled
    idle_exit_s: float | None = None

    @property
    def transactional_id(self) -> str:
        """One per member: a restarted member aborts its own open transaction; two members started
        by mistake with one instance name fence each other instead of both charging."""
        return f"{self.group_id}-{self.instance}"

    @property
    def source(self) -> str:
        return f"rating/{self.instance}"


class Rater(Stage):
    """The rating stage: the records are legs, a batch is whatever one consume call hands out, its
    effect is rated in memory and made durable by ``TransactionCommit`` (the loop's order)."""

    noun = "legs"
    keeps_partition_state = True

    def __init__(self, options: RaterOptions) -> None:
        self.opt = options
        self.ledger = Ledger()
        self.recent = RecentLegs(options.dedupe_window_s, clock_skew_s=LEG_CLOCK_SKEW_S)
        #: leg id -> the highest CDR version a re-rate has applied to it (duplicates are dropped)
        self.rerated: dict[str, int] = {}
        #: epoch ms up to which ``recent`` holds every committed charge (None: nothing read yet)
        self._recent_read_ms: int | None = None
        #: consumers replaced since the last commit (``replaced``)
        self._replaced_in_a_row = 0
        self.reference = ReferenceFeed(options.reference_topics, options.reference_aliases)
        #: the legs of the batch being read
        self._msgs: list[Message] = []
        #: a batch is due when full, or once the input ran dry and the last one began long enough ago
        self.pace = Pace(options.batch_max, options.min_commit_interval_s, options.min_commit_interval_s)
        self.loop = StageLoop(
            self,
            self._new_consumer,
            TransactionCommit(
                self._new_producer(),
                options.transactional_id,
                options.txn_timeout_s,
                fenced_by="a newer rater instance, or `callback rerate`",
                new_producer=self._new_producer,
            ),
            topics=[options.legs_topic, options.rerates_topic],
            replace_failed=True,
            consume_max=options.batch_max,
            consume_timeout_s=options.batch_wait_s,
            idle_exit_s=options.idle_exit_s,
            # a previous owner's open transaction ends by its timeout at the latest
            assign_timeout_s=options.txn_timeout_s + 30.0,
        )

    def _new_producer(self) -> Producer:
        return Producer(
            producer_config(
                self.opt.transactional_id,
                **{
                    "transaction.timeout.ms": int(self.opt.txn_timeout_s * 1000),
                    "linger.ms": 5,
                    # a transaction's first produce to a partition waits until the broker has written
                    # the previous transaction's markers (CONCURRENT_TRANSACTIONS) and is retried
                    # after this backoff: librdkafka's default, 100 ms, was most of a leg's way to
                    # ClickHouse (docs/rating.md, "Latency")
                    "retry.backoff.ms": 10,
                    "queue.buffering.max.messages": 1_000_000,
                    "batch.size": 1_000_000,
                },
            )
        )

    @property
    def producer(self) -> Producer:
        """The transactional producer of the moment (the loop replaces a wedged one)."""
        return self.loop.committer.producer

    def _new_consumer(self) -> Consumer:
        return Consumer(
            consumer_config(
                self.opt.group_id,
                read_committed=True,
                **{
                    "fetch.wait.max.ms": 50,
                    "queued.min.messages": 50_000,
                    "enable.partition.eof": False,
                    # partition n of the legs and of the rerates go to the same member (module doc)
                    "partition.assignment.strategy": "range",
                    # static membership: a restarted rater takes its partitions back at once, without
                    # a rebalance; a dead one's move to the others after the session timeout
                    "group.instance.id": self.opt.transactional_id,
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1_000,
                },
            )
        )

    @property
    def consumer(self) -> Consumer:
        return self.loop.consumer

    # --- start-up and assignments ---------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        self.producer.init_transactions(self.opt.txn_timeout_s)  # aborts what this member left open
        self._check_copartitioned()
        self.reference.load()
        log.info(
            "rater %s started in %.1f s; joining group %s for %s and %s",
            self.opt.transactional_id,
            time.monotonic() - t0,
            self.opt.group_id,
            self.opt.legs_topic,
            self.opt.rerates_topic,
        )

    def _check_copartitioned(self) -> None:
        """A payer's re-rates must reach the member holding its legs: both topics need the same
        number of partitions, or a re-rate would correct a balance another member owns."""
        topics = (self.opt.legs_topic, self.opt.rerates_topic)
        counts = {t: len(partitions_of(self.consumer, t)) for t in topics}
        if len(set(counts.values())) != 1:
            raise SystemExit(
                f"{self.opt.legs_topic} and {self.opt.rerates_topic} must have the same number of "
                f"partitions (they have {counts}); give {self.opt.rerates_topic} as many and restart"
            )

    def assigned(self, partitions: list[tuple[str, int]]) -> None:
        """The group gave this member ``partitions``, their previous owners' transactions over:
        reload the balances, the charged leg ids and the applied re-rates, as committed."""
        t0 = time.monotonic()
        self.ledger = load_ledger(self.opt.balances_topic)
        self._restore_recent_legs()
        self._restore_rerated(partitions)
        legs = [p for t, p in partitions if t == self.opt.legs_topic]
        log.info(
            "rater %s ready in %.1f s: partitions %s of %s at %s; %d balances, %d recent legs",
            self.opt.transactional_id,
            time.monotonic() - t0,
            legs,
            self.opt.legs_topic,
            {p: off for (t, p), off in self.loop.positions.items() if t == self.opt.legs_topic},
            len(self.ledger),
            len(self.recent),
        )

    def _restore_recent_legs(self) -> None:
        """The leg ids charged in the last ``dedupe_window_s``, from ``cdr.rated``: every charge the
        duplicate filter must know (``RecentLegs.horizon`` sends older legs to review). The first
        time the whole window; after that from where the last read ended, less the longest a
        transaction may stay open (a record's time is when it was produced, not committed)."""
        consumer = state_consumer("rater-recent")
        now_ms = int(time.time() * 1000)
        since_ms = now_ms - int(self.opt.dedupe_window_s * 1000)
        if self._recent_read_ms is not None:
            since_ms = max(since_ms, self._recent_read_ms - int((self.opt.txn_timeout_s + 60) * 1000))
        try:
            read_to_end(
                consumer,
                since_time(consumer, self.opt.cdr_topic, since_ms),
                lambda m: self.recent.add(m.key().decode(), (m.timestamp()[1] or since_ms) / 1000),
            )
        finally:
            consumer.close()
        self._recent_read_ms = now_ms

    def _restore_rerated(self, partitions: list[tuple[str, int]]) -> None:
        """The re-rates already applied on this member's partitions of ``cdr.rerates``: those before
        the committed offset (``loop.positions``), each a leg id and the version it brought."""
        mine = {p: off for (t, p), off in self.loop.positions.items() if t == self.opt.rerates_topic}
        if not mine:
            return

        def on(msg: Message) -> None:
            if msg.offset() >= mine.get(msg.partition(), 0) or not msg.value():
                return
            try:
                cdr = RerateRequest.model_validate_json(msg.value()).cdr
            except ValueError:
                return  # dead-lettered when it was read
            if cdr.version > self.rerated.get(cdr.leg_id, 0):
                self.rerated[cdr.leg_id] = cdr.version

        consumer = state_consumer("rater-rerated")
        try:
            start = [TopicPartition(self.opt.rerates_topic, p, OFFSET_BEGINNING) for p in mine]
            read_to_end(consumer, start, on)
        finally:
            consumer.close()

    # --- the stage: what the loop (callback/stage_loop.py) does with a batch of legs -------------
    def stop(self, *_: object) -> None:
        self.loop.stop()

    def run(self) -> int:
        return self.loop.run(start=self.start)

    def tick(self) -> None:
        self.reference.poll()

    def take(self, msg: Message) -> None:
        self._msgs.append(msg)

    def replaced(self) -> None:
        """The consumer failed for good and is being replaced. Once is a broker pause (a static
        member fenced by its own rejoin); again and again with no commit between is a second
        process with our ``--instance`` name, which took our group.instance.id (and, with it, our
        transactional id): stop, rather than fence it back for ever."""
        self._replaced_in_a_row += 1
        if self._replaced_in_a_row >= _TWIN_AFTER:
            log.critical(
                "fenced: the consumer of %s was replaced %d times in a row without a commit; another "
                "rater runs with instance %r (group.instance.id %s). Exiting; give each rater its own "
                "--instance",
                self.opt.transactional_id,
                self._replaced_in_a_row,
                self.opt.instance,
                self.opt.transactional_id,
            )
            raise SystemExit(3)

    def drop(self) -> None:
        self._msgs = []

    def close(self) -> None:
        self.reference.close()

    def flush(self) -> Future[_Rated]:
        """Rate the batch (in memory, debits staged); ``Reread`` when the reference catch-up could
        not reach Kafka, so no leg is dead-lettered for want of data it could not fetch."""
        msgs, self._msgs = self._msgs, []
        batch = RatingBatch(
            self.reference.data,
            self.ledger,
            self.recent,
            source=self.opt.source,
            rated_at=datetime.now(UTC),
            refresh=self.reference.catch_up,
            rerated=self.rerated,
        )
        rerates = self.opt.rerates_topic
        try:
            for i, msg in enumerate(msgs):
                if msg.topic() == rerates:
                    batch.add_rerate(i, msg.value())
                else:
                    batch.add(i, msg.value())
        except (KafkaException, TimeoutError) as exc:  # only the reference catch-up reads Kafka
            log.warning(
                "could not bring reference data up to date (%s); rating these %d legs again from %s",
                exc,
                len(msgs),
                self.loop.positions,
            )
            time.sleep(_RETRY_PAUSE_S)
            raise Reread from exc
        return done_future(_Rated(msgs, batch, batch.finish()))

    def produce(self, rated: _Rated) -> None:
        """Inside the transaction: the CDRs, the ledger entries, the balances and the dead letters
        of the batch."""
        produce = self.producer.produce
        result, msgs = rated.result, rated.msgs
        cdr_topic, balances_topic = self.opt.cdr_topic, self.opt.balances_topic
        for key, value in result.cdrs:
            self._produce(produce, cdr_topic, key, value)
        for key, value in result.balances:
            self._produce(produce, balances_topic, key, value)
        for key, value in result.ledger:
            self._produce(produce, self.opt.ledger_topic, key, value)
        for index, why in result.rejected:
            msg = msgs[index]
            rerate = msg.topic() == self.opt.rerates_topic
            dead_letter(
                self.producer,
                source=self.opt.source,
                source_topic=CDR_RERATES.name if rerate else self.opt.dead_letter_source,
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

    def settled(self, rated: _Rated, committed: bool) -> None:
        """Merge the staged debits into memory once the transaction committed; drop them when it
        was aborted (the loop rewound: the batch is rated again)."""
        if not committed:
            metrics.TRANSACTIONS.labels("aborted").inc()
            return
        result, msgs = rated.result, rated.msgs
        self._replaced_in_a_row = 0
        rated.batch.commit(time.time())
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


@dataclass
class _Rated:
    """A batch rated in memory: its legs, the batch holding the staged debits, and its outputs."""

    msgs: list[Message]
    batch: RatingBatch
    result: BatchResult


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
