"""One consume → process → commit-after-the-effect loop for the long-running stages.

A stage (the CDR sink, the rater) says only what to do with a batch of records and how its effect
becomes durable; ``StageLoop`` owns the Kafka side and the order, in the spirit of a quix-streams
checkpoint (docs/architecture.md, "Nothing lost"):

1. **consume** and triage (``kafka_io.is_record``), remembering per partition the offset to commit
   (the one after the last record taken);
2. when the stage says the batch is due (by default after every read, which returns what is ready
   and waits only for a first record), **flush** it: the stage starts its effect (an insert on a
   worker thread, or rating it at once) and hands back a ``Future``; the next batch is read while
   it runs, and at most one batch is in flight;
3. once the effect is done, **produce** what goes with it (the stage's dead letters, or its
   outputs inside the transaction), then **commit** the offsets, never before. Two ways:
   ``ConsumerCommit`` (``consumer.commit`` after the effect) and ``TransactionCommit`` (the offsets
   sent inside the producer's transaction, with the outputs).

Around that order, the same for every stage:

* an effect that takes longer than ``patience_s`` pauses the consumer, which is still polled so the
  group keeps this member; what it hands out meanwhile is taken after the commit;
* a failed commit is not a reason to exit: the records are read again. A subscribed consumer gets
  them from the group (this member after it rejoins, or the partition's new owner); an assigned
  one is rewound to the last committed positions;
* a consumer that fails for good (``ConsumerFailed``, a commit fatal error) is replaced after a
  backoff when ``replace_failed`` (what was not committed is dropped and read again; closing the
  old one may take ``CLOSE_PATIENCE_S`` at most), and ends the loop otherwise;
* a partition revoked from a subscribed consumer: the pending batch is checkpointed first;
* a stage that keeps state per partition (``Stage.keeps_partition_state``: the rater's balances)
  is told of every new assignment (``Stage.assigned``) after the partitions' committed offsets
  are fetched, which for a read_committed consumer waits until the previous owner's transaction
  is over (KIP-447), so what the stage reloads is all that was committed; its consumer starts
  each partition there, and an aborted transaction seeks back to it;
* a loop that has not come round for ``stall_report_s`` (every wait in it is bounded, so it should
  have) logs where its threads are (``StallWatch``), and again while it lasts;
* SIGTERM/SIGINT stop it: the pending batch is checkpointed, and an effect still waiting for its
  server gives up (``Abandoned``), its offsets uncommitted; ``idle_exit_s`` stops it after that
  long without a record.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from callback.kafka_io import ConsumerFailed, failed_for_good, is_record
from callback.stall_watch import StallWatch

log = logging.getLogger(__name__)

#: (topic, partition) -> the offset to commit: the next one to read
Offsets = dict[tuple[str, int], int]

_FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


class _Wedged(Exception):
    """A transactional call did not return though its own timeout had long passed (the class doc
    of ``TransactionCommit``)."""


class Abandoned(Exception):
    """The loop is stopping before a batch's effect is durable: its offsets stay uncommitted and
    the next run reads it again."""


class Reread(Exception):
    """The stage could not process the batch now (its own inputs unreachable): read it again, from
    the last committed positions."""


@dataclass
class Batch:
    """The records taken since the last checkpoint: how many, since when, the offsets to commit."""

    offsets: Offsets = field(default_factory=dict)
    records: int = 0
    first_at: float | None = None
    #: the last read returned fewer records than asked for: nothing more is waiting
    input_dry: bool = False


#: The collector's thresholds in a stage's process (Python's are 700, 10, 10). A stage makes a few
#: short-lived containers per record (a rater's account and ledger entry, a sink's row), so young
#: collections ran every 150 records or so and took about 2 us of a leg's 20 in the rater's loop;
#: with these, 1.2 us. Cyclic garbage is still collected, less often; set while the loop runs.
GC_THRESHOLDS = (10_000, 10, 10)


@contextmanager
def spaced_collection() -> Iterator[None]:
    """The collector at ``GC_THRESHOLDS`` while the block runs (a stage loop, or a measurement of
    the work it does), at what it was before afterwards."""
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


@dataclass(frozen=True)
class Pace:
    """When a batch falls due, for a stage that paces its effects by size and time: at ``most``
    records; else ``at_latest_s`` after its first record; and, once the input ran dry (nothing
    more is waiting), as soon as ``min_interval_s`` has passed since the previous flush began.
    Under load batches grow by themselves; a trickle is flushed within ``min_interval_s`` without
    becoming one effect (an insert, a transaction) per record."""

    most: int
    at_latest_s: float
    min_interval_s: float

    def due_in(self, batch: Batch, flushed_at: float, now: float) -> float:
        """Seconds until ``batch`` falls due by time (``Stage.due_in``); ``flushed_at`` is when the
        previous flush began (``time.monotonic()``)."""
        at_latest = (batch.first_at if batch.first_at is not None else now) + self.at_latest_s - now
        if batch.input_dry:
            return min(at_latest, flushed_at + self.min_interval_s - now)
        return at_latest

    def due(self, batch: Batch, flushed_at: float, now: float) -> bool:
        return batch.records >= self.most or self.due_in(batch, flushed_at, now) <= 0


@dataclass
class _InFlight:
    done: Future[Any]
    batch: Batch


def done_future(result: Any) -> Future[Any]:
    """A ``Future`` that already holds ``result``: the effect of a stage that works synchronously."""
    future: Future[Any] = Future()
    future.set_result(result)
    return future


class Stage:
    """What a stage does with its records; every hook but ``take`` and ``flush`` may be left as is."""

    #: what its records are, in the loop's log lines ("CDRs", "legs")
    noun = "records"
    #: True: the stage's memory follows its partitions (``assigned`` reloads it on every
    #: assignment) and an aborted commit rewinds a subscribed consumer to the committed offsets
    keeps_partition_state = False
    #: how its batches fall due by size and time (``due``, ``due_in``); None: at every read
    pace: Pace | None = None
    #: when the loop last began a flush (``time.monotonic()``), for ``pace``
    flushed_at = 0.0

    def assigned(self, partitions: list[tuple[str, int]]) -> None:
        """The group handed this member ``partitions`` (all it now holds), whose committed offsets
        are stable: reload what the stage keeps about them. Called only when
        ``keeps_partition_state``; an exception is retried after a pause until it passes."""

    def tick(self) -> None:
        """After every consume call, records or not (e.g. poll the reference data)."""

    def take(self, msg: Message) -> None:
        """A record of the batch being read (its offset is the loop's business)."""
        raise NotImplementedError

    def due(self, batch: Batch) -> bool:
        """Whether the batch read so far (never empty) is to be flushed now."""
        return self.pace is None or self.pace.due(batch, self.flushed_at, time.monotonic())

    def due_in(self, batch: Batch) -> float:
        """Seconds until a batch that is not due yet becomes due by time alone (``due``'s clocks):
        the loop waits for more records no longer than that."""
        return 0.0 if self.pace is None else self.pace.due_in(batch, self.flushed_at, time.monotonic())

    def flush(self) -> Future[Any]:
        """Hand the batch over and start its effect; the result goes to ``produce`` and ``settled``.
        ``Reread`` to read the batch again instead."""
        raise NotImplementedError

    def produce(self, result: Any) -> None:
        """The outputs that go with the offsets, produced before they are committed (inside the
        transaction, for ``TransactionCommit``). ``Abandoned`` leaves the offsets uncommitted."""

    def settled(self, result: Any, committed: bool) -> None:
        """After the commit: ``committed`` False when it failed and the batch will be read again."""

    def drop(self) -> None:
        """Forget the batch being read: its consumer is replaced, the new one reads it again."""

    def replaced(self) -> None:
        """The consumer failed for good and is being replaced (count it)."""

    def close(self) -> None:
        """The loop ended (stopping is set): release the stage's own clients."""


class ConsumerCommit:
    """Commit with the consumer, synchronously, after the effect and its outputs.

    A failure that is not fatal is a lost membership (a broker pause longer than the session
    timeout, a rebalance): the records are read again by this member or the partition's new owner,
    so the effect has to be repeatable (``reread`` says why it is, in the log). A fatal one raises
    ``ConsumerFailed``."""

    def __init__(self, reread: str, on_failure: Callable[[], None] = lambda: None) -> None:
        self.reread = reread
        self.on_failure = on_failure

    def commit(self, loop: StageLoop, offsets: Offsets, produce: Callable[[], None], what: str) -> bool:
        produce()
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            loop.consumer.commit(offsets=partitions, asynchronous=False)
            return True
        except KafkaException as exc:
            err = exc.args[0]
            self.on_failure()
            if failed_for_good(err):
                log.warning("commit of offsets %s failed for good (%s); %s, by a new consumer",
                            offsets, err.str(), self.reread)
                raise ConsumerFailed(err) from exc
            log.warning(
                "commit of offsets %s failed (%s): the group dropped this member or moved its "
                "partitions (broker pause, rebalance); %s",
                offsets,
                err.str(),
                self.reread,
            )
            return False


def _pause_before_retry(what: str, attempt: int, err: KafkaError) -> None:
    """Log a transactional call that the broker did not answer, and wait longer each attempt."""
    log.warning("%s attempt %d: %s; retrying", what, attempt, err)
    time.sleep(min(0.5 * attempt, 5.0))


class TransactionCommit:
    """Produce the outputs and send the offsets in one transaction of ``producer``: all or nothing.

    A call that times out is retried for half as long as the transaction may last; an abortable
    error (or a broker silent for longer) aborts it and returns False, and the loop rewinds; a fatal
    one (fenced: another producer took ``transactional_id``) raises, for the process to exit.

    A transaction left unanswered that long also gets a new producer (when ``new_producer`` is
    given): librdkafka (2.16) can keep waiting on a group coordinator that left the cluster, its
    ``send_offsets_to_transaction`` timing out for ever while the other brokers answer
    (confluentinc/librdkafka#5511, seen in tests/integration/test_cluster_chaos.py when the killed
    broker coordinated the raters' group); a new producer looks its coordinators up afresh. Half
    the transaction timeout leaves the abort to us rather than to the broker, which would fence
    the producer.

    A producer whose abort does not go through within ``ABORT_PATIENCE_S`` is replaced by a new one
    from ``new_producer`` (when given): after a broker pause librdkafka's transactional producer can
    stay wedged, every abort timing out though the broker answers again (seen in
    tests/integration/test_rating_pause.py). The new producer's ``init_transactions`` takes the
    same transactional id, which aborts the open transaction on the broker and fences the old one.
    """

    #: how long an abort may keep failing before the producer is taken for wedged and replaced
    ABORT_PATIENCE_S = 10.0
    #: how long past its own timeout a transactional call may block before it is taken for wedged
    CALL_GRACE_S = 10.0

    def __init__(
        self,
        producer: Producer,
        transactional_id: str,
        timeout_s: float,
        fenced_by: str,
        new_producer: Callable[[], Producer] | None = None,
    ) -> None:
        self.producer = producer
        self.transactional_id = transactional_id
        self.timeout_s = timeout_s
        #: who may have taken the transactional id, for the log line
        self.fenced_by = fenced_by
        self.new_producer = new_producer

    @property
    def answer_within_s(self) -> float:
        """How long a transaction may go unanswered before it is aborted (class doc)."""
        return self.timeout_s / 2

    def commit(self, loop: StageLoop, offsets: Offsets, produce: Callable[[], None], what: str) -> bool:
        deadline = time.monotonic() + self.answer_within_s
        try:
            self.producer.begin_transaction()
            produce()
            partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            self._retrying(
                loop,
                "send_offsets_to_transaction",
                lambda left: self.producer.send_offsets_to_transaction(
                    partitions, loop.consumer.consumer_group_metadata(), left
                ),
                deadline,
            )
            self._retrying(
                loop, "commit_transaction", lambda left: self.producer.commit_transaction(left), deadline
            )
            return True
        except _Wedged as exc:
            if self.new_producer is None:
                raise
            log.warning("transaction of %s left open: %s; rewinding to %s", what, exc, loop.positions)
            self._replace_producer(loop, str(exc))  # its init_transactions aborts it on the broker
            return False
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in _FENCED:
                log.critical(
                    "fenced: another process took transactional id %s (%s); exiting without "
                    "committing %s, a restart reloads the committed state",
                    self.transactional_id,
                    self.fenced_by,
                    what,
                )
                raise
            if err.fatal():
                log.critical("fatal Kafka error in transaction, exiting: %s", err)
                raise
            log.warning("transaction of %s aborted (%s); rewinding to %s", what, err, loop.positions)
            producer = self.producer
            self._abort(loop)
            if (
                err.code() == KafkaError._TIMED_OUT
                and self.new_producer is not None
                and self.producer is producer  # the abort did not replace it already
                and not loop.stopping
            ):
                self._replace_producer(
                    loop, f"its transaction got no answer within {self.answer_within_s:.0f} s"
                )
            return False

    def _retrying(
        self, loop: StageLoop, what: str, call: Callable[[float], None], deadline: float
    ) -> None:
        """``call(seconds left)`` again while it fails with a retriable error (a timeout: the broker
        did not answer in time), until ``deadline``; any other error is raised."""
        attempt = 0
        while True:
            try:
                self._bounded(what, call, max(deadline - time.monotonic(), 1.0))
                return
            except KafkaException as exc:
                err = exc.args[0]
                if (
                    not err.retriable()
                    or err.txn_requires_abort()
                    or err.fatal()
                    or loop.stopping
                    or time.monotonic() > deadline
                ):
                    raise
                attempt += 1
                _pause_before_retry(what, attempt, err)

    def _bounded(self, what: str, call: Callable[[float], None], timeout_s: float) -> None:
        """``call(timeout_s)`` on a helper thread, waited for ``CALL_GRACE_S`` longer than its own
        timeout at most: librdkafka 2.16's ``send_offsets_to_transaction`` was seen blocked for
        minutes past a 30 s timeout after the group coordinator's broker died (rater log of a
        cluster test run). Its exception, if any, is raised here; ``_Wedged`` if it never returned
        (the thread is left blocked, with the producer it holds)."""
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                call(timeout_s)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                outcome.append(exc)

        caller = threading.Thread(target=run, name=what, daemon=True)
        caller.start()
        caller.join(timeout_s + self.CALL_GRACE_S)
        if not outcome:
            raise _Wedged(f"{what} did not return within {timeout_s + self.CALL_GRACE_S:.0f} s")
        if outcome[0] is not None:
            raise outcome[0]

    def _abort(self, loop: StageLoop) -> None:
        """Abort the open transaction, waiting for the broker as long as it takes (unless stopping:
        the next start's ``init_transactions`` aborts it then)."""
        attempt = 0
        started = time.monotonic()
        while True:
            if self.new_producer is not None and time.monotonic() - started >= self.ABORT_PATIENCE_S:
                self._replace_producer(loop, f"it could not abort within {self.ABORT_PATIENCE_S:.0f} s")
                return
            try:
                self.producer.abort_transaction(min(self.timeout_s, self.ABORT_PATIENCE_S))
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
                if loop.stopping:
                    log.warning("stopping with a transaction not aborted (%s); the next start aborts it", err)
                    return
                attempt += 1
                _pause_before_retry("abort_transaction", attempt, err)

    def _replace_producer(self, loop: StageLoop, why: str) -> None:
        """A new transactional producer with the same id; its ``init_transactions`` aborts what the
        old one left open. Retried while the broker does not answer (until stopping)."""
        assert self.new_producer is not None
        log.warning(
            "replacing the transactional producer of %s: %s (the new one aborts what it left open)",
            self.transactional_id,
            why,
        )
        try:
            self.producer.purge(in_queue=True, in_flight=True)  # nothing of the old one is sent
        except (KafkaException, RuntimeError, AttributeError) as exc:
            log.debug("purging the old producer: %s", exc)
        attempt = 0
        while True:
            producer = self.new_producer()
            try:
                producer.init_transactions(self.timeout_s)
                self.producer = producer
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or not err.retriable() or loop.stopping:
                    raise
                attempt += 1
                _pause_before_retry("init_transactions of the new producer:", attempt, err)


class StageLoop:
    """Consume, hand records to ``stage``, and checkpoint: flush → produce → commit (module doc).

    ``topics``: subscribe to them (group-managed partitions); None: the consumer is assigned its
    partitions by the caller, who sets ``positions``, and a failed commit rewinds there."""

    #: how often a loop waiting for records checks the effect in flight
    INFLIGHT_CHECK_S = 0.005
    #: how long closing a consumer that failed for good may take before it is left behind
    CLOSE_PATIENCE_S = 30.0

    def __init__(
        self,
        stage: Stage,
        new_consumer: Callable[[], Consumer],
        committer: ConsumerCommit | TransactionCommit,
        *,
        topics: Iterable[str] | None = None,
        replace_failed: bool = False,
        consume_max: int = 10_000,
        consume_timeout_s: float = 0.2,
        idle_exit_s: float | None = None,
        patience_s: float = 2.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 15.0,
        assign_timeout_s: float = 90.0,
        stall_report_s: float = 120.0,
    ) -> None:
        self.stage = stage
        self._new_consumer = new_consumer
        self.committer = committer
        self.topics = list(topics) if topics is not None else None
        self.replace_failed = replace_failed
        self.consume_max = consume_max
        self.consume_timeout_s = consume_timeout_s
        self.idle_exit_s = idle_exit_s
        #: how long to wait for an effect before pausing the consumer (well under max.poll.interval.ms)
        self.patience_s = patience_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        #: how long fetching an assignment's committed offsets may wait for a previous owner's open
        #: transaction to end (more than the transaction timeout: the broker aborts it by then)
        self.assign_timeout_s = assign_timeout_s
        self.consumer = new_consumer()
        self.stopping = False
        self.batch = Batch()
        self.inflight: _InFlight | None = None
        #: the last committed offset of each partition (what an assigned consumer rewinds to)
        self.positions: Offsets = {}
        #: the fatal error the consumer reported; the loop replaces the consumer
        self.failed: KafkaError | None = None
        self._replace_delay_s = backoff_initial_s
        self._late: list[Message] = []
        #: logs where the loop is if it has not come round for ``stall_report_s`` (stall_watch.py)
        self.watch = StallWatch(f"the {stage.noun} loop", after_s=stall_report_s)

    # --- running ---------------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        self.stopping = True

    def run(self, start: Callable[[], None] | None = None) -> int:
        """Until stopped (signal, ``idle_exit_s``); ``start`` runs first, with the signals handled."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        if start is not None:
            start()
        self._subscribe()
        idle_since = time.monotonic()
        self.watch.start()
        try:
            with spaced_collection():
                while not self.stopping:
                    self.watch.beat()
                    if self.failed is not None:
                        self.replace_consumer()
                        continue
                    msgs = self.read()
                    self.stage.tick()
                    if self.take_all(msgs):
                        idle_since = time.monotonic()
                    if self.inflight is not None and self.inflight.done.done():
                        self.complete()
                    if self.batch.offsets and self.stage.due(self.batch):
                        self.checkpoint()
                    elif (
                        not self.batch.offsets
                        and self.inflight is None
                        and self.idle_exit_s is not None
                        and time.monotonic() - idle_since > self.idle_exit_s
                    ):
                        log.info("no %s for %.0f s, exiting", self.stage.noun, self.idle_exit_s)
                        break
                self.checkpoint()
                self.complete()
        finally:
            self.stopping = True  # an effect still waiting for its server gives up, uncommitted
            self.watch.stop()
            self.stage.close()
            self.consumer.close()
        return 0

    def read(self) -> list[Message]:
        """The records ready now, up to ``consume_max``, waiting up to ``consume_timeout_s`` only for
        the first: a batch closes when the input runs dry, not after a fixed wait (librdkafka's
        batch consume waits its whole timeout unless the batch fills). ``batch.input_dry`` says
        whether the input ran dry (fewer records than asked for).

        The wait for a first record is shorter when something else is due sooner: the pending
        batch by the stage's clocks (``Stage.due_in``), or the effect in flight, checked every
        ``INFLIGHT_CHECK_S`` (nothing wakes a consumer when a worker thread finishes), so that
        neither waits for a record that may not come."""
        consume, most = self.consumer.consume, self.consume_max
        msgs = consume(num_messages=most, timeout=0)
        if not msgs:
            wait = self.consume_timeout_s
            if self.inflight is not None:
                wait = min(wait, self.INFLIGHT_CHECK_S)
            if self.batch.offsets:
                wait = min(wait, max(self.stage.due_in(self.batch), 0.0))
            msgs = consume(num_messages=1, timeout=wait)
            if msgs and most > 1:
                msgs += consume(num_messages=most - 1, timeout=0)
        self.batch.input_dry = len(msgs) < most
        return msgs

    def take(self, msg: Message) -> bool:
        """Triage ``msg`` and, if it is a record, hand it to the stage; whether it was one."""
        return self.take_all((msg,)) == 1

    def take_all(self, msgs: Iterable[Message]) -> int:
        """Triage ``msgs`` in order and hand the records among them to the stage; how many there
        were. One loop for a whole read: per record about half what a call to ``take`` costs."""
        batch, stage_take = self.batch, self.stage.take
        offsets = batch.offsets
        taken = 0
        for msg in msgs:
            if msg.error() is not None:
                try:
                    if not is_record(msg, f"{self.stage.noun} consumer"):
                        continue
                except ConsumerFailed as exc:
                    if not self.replace_failed:
                        raise
                    self.failed = exc.args[0]
                    continue
            if batch.first_at is None:
                batch.first_at = time.monotonic()
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            batch.records += 1
            stage_take(msg)
            taken += 1
        return taken

    # --- the checkpoint: flush → produce → commit --------------------------------------------------
    def checkpoint(self, poll_while_waiting: bool = True) -> None:
        """Flush the batch read so far, after the batch before it is durable and committed."""
        if not self.batch.offsets:
            return
        self.complete(poll_while_waiting)
        batch, self.batch = self.batch, Batch()
        self.stage.flushed_at = time.monotonic()
        try:
            done = self.stage.flush()
        except Reread:
            self.rewind()
            return
        self.inflight = _InFlight(done, batch)
        if done.done():
            self.complete(poll_while_waiting)

    def complete(self, poll_while_waiting: bool = True) -> None:
        """Wait until the batch in flight has its effect, then produce and commit (never before)."""
        inflight = self.inflight
        if inflight is None:
            return
        # the usual case: the effect is about done; wait without touching the consumer (pausing
        # would drop its prefetched records, to be fetched again)
        futures.wait([inflight.done], timeout=self.patience_s)
        if not inflight.done.done() and poll_while_waiting:
            # the effect's server is slow or down: stop fetching, but keep polling so the group
            # keeps us
            self.consumer.pause(self.consumer.assignment())
            try:
                while not inflight.done.done():
                    self.watch.beat()  # waiting on a slow server is not a stall: the stage logs it
                    self._late.extend(self.consumer.consume(num_messages=1000, timeout=0.2))
            finally:
                self.consumer.resume(self.consumer.assignment())
        if self.inflight is not inflight:
            return  # a rebalance callback, run while we polled, completed it already
        self.inflight = None
        what = f"{inflight.batch.records} {self.stage.noun}"
        try:
            result = inflight.done.result()
            committed = self.committer.commit(
                self, inflight.batch.offsets, lambda: self.stage.produce(result), what
            )
        except Abandoned:
            log.warning("stopping with %s not durable; their offsets stay uncommitted and the next run "
                        "reads them again", what)
            return
        except ConsumerFailed as exc:
            if not self.replace_failed:
                raise
            self.failed = exc.args[0]
            committed = False
        if committed:
            self.positions.update(inflight.batch.offsets)
            self._replace_delay_s = self.backoff_initial_s
        else:
            self.rewind()
        self.stage.settled(result, committed)
        late, self._late = self._late, []
        self.take_all(late)  # records a paused consumer still handed out while we waited

    # --- where the consumer reads -------------------------------------------------------------------
    def rewind(self) -> None:
        """Read again from the last committed positions: an assigned consumer is assigned there
        again, a subscribed one of a stage that keeps partition state seeks there; another
        subscribed one is left to its group (its commit failed because the group moved on), which
        hands the records out again.

        A consumer that cannot seek any more (a static member another one fenced, which the
        transaction's commit found out before a read did: ``Local: Erroneous state``) is replaced,
        as if a read had reported it: its successor starts at the committed positions, where the
        rewind was going."""
        try:
            if self.topics is None:
                self.consumer.assign([TopicPartition(t, p, off) for (t, p), off in self.positions.items()])
            elif self.stage.keeps_partition_state:
                for (t, p), off in self.positions.items():
                    self.consumer.seek(TopicPartition(t, p, off))
        except KafkaException as exc:
            if not self.replace_failed:
                raise
            log.warning("could not rewind the %s consumer to %s (%s); replacing it",
                        self.stage.noun, self.positions, exc.args[0])
            self.failed = exc.args[0]

    def replace_consumer(self) -> None:
        """Close the consumer that failed for good and subscribe a new one, after a backoff.

        The batch in flight is waited for (its effect is done) but not committed; the records read
        but not flushed are dropped. The new consumer starts at the committed offsets, so all of
        them are read again (the stage's effect must be repeatable)."""
        err = self.failed
        pending = self.batch.records + (self.inflight.batch.records if self.inflight else 0)
        log.error("the Kafka consumer failed for good (%s); replacing it in %.1f s, and reading the "
                  "%d %s not committed again", err.str() if err else "?", self._replace_delay_s,
                  pending, self.stage.noun)
        self.stage.replaced()
        inflight, self.inflight = self.inflight, None
        if inflight is not None:
            try:
                inflight.done.result()
            except Abandoned:
                pass
        self.batch, self._late = Batch(), []
        self.stage.drop()
        self._close_failed_consumer(self.consumer)
        deadline = time.monotonic() + self._replace_delay_s
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(0.05)
        self._replace_delay_s = min(self._replace_delay_s * 2, self.backoff_max_s)
        self.consumer = self._new_consumer()
        self.failed = None
        self._subscribe()

    def _close_failed_consumer(self, consumer: Consumer) -> None:
        """Close a consumer that failed for good, waiting ``CLOSE_PATIENCE_S`` at most: librdkafka's
        close can keep asking for a group coordinator that no broker names (confluentinc/librdkafka
        #3740), and the loop must go on. One that does not close in time is left behind; its
        replacement takes its place in the group (the same static member, when it has one)."""

        def close() -> None:
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the failed consumer: %s", exc)

        closer = threading.Thread(target=close, name="close failed consumer", daemon=True)
        closer.start()
        closer.join(self.CLOSE_PATIENCE_S)
        if closer.is_alive():
            log.warning("the failed consumer did not close within %.0f s; leaving it behind",
                        self.CLOSE_PATIENCE_S)

    def _subscribe(self) -> None:
        if self.topics is None:
            return
        if self.stage.keeps_partition_state:
            self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        else:
            self.consumer.subscribe(self.topics, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Fetch the committed offsets (stable: a previous owner's open transaction is over), let
        the stage reload its state for these partitions, and start each partition there. Retried
        while Kafka does not answer: nothing is read before the state is whole."""
        attempt = 0
        while True:
            try:
                committed = consumer.committed(partitions, timeout=self.assign_timeout_s)
                self.positions = {
                    (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                    for tp in committed
                }
                self.stage.assigned(sorted(self.positions))
                break
            except (KafkaException, TimeoutError) as exc:
                if self.stopping:
                    raise
                attempt += 1
                delay = min(self.backoff_initial_s * 2 ** (attempt - 1), self.backoff_max_s)
                log.warning("could not take over partitions %s (%s); trying again in %.1f s",
                            _names(partitions), exc, delay)
                time.sleep(delay)
        consumer.assign([TopicPartition(t, p, off) for (t, p), off in self.positions.items()])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Checkpoint what was read before the partitions go to another member, so it is neither
        lost (it would be read again anyway) nor processed twice by two members."""
        if self.batch.offsets or self.inflight is not None:
            log.info("partitions revoked: checkpointing %d pending %s first",
                     self.batch.records, self.stage.noun)
            # inside a consumer callback: wait without polling the consumer again
            self.checkpoint(poll_while_waiting=False)
            self.complete(poll_while_waiting=False)
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.positions = {tp: off for tp, off in self.positions.items() if tp not in gone}


def _names(partitions: list[TopicPartition]) -> str:
    """'callback.legs[0,3]' for log lines."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}{sorted(ps)}" for t, ps in sorted(by_topic.items()))
