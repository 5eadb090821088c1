"""The one consume → process → commit loop (``callback/stage_loop.py``) with a scripted consumer and
a stage that records what it is asked: the order flush → produce → commit, a commit only after the
effect, a failed commit read again, a consumer that failed for good, revocation, idle exit."""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from callback.kafka_io import ConsumerFailed
from callback.stage_loop import (
    Abandoned,
    Batch,
    ConsumerCommit,
    Reread,
    Stage,
    StageLoop,
    TransactionCommit,
    done_future,
)
from tests.unit.kafka_fakes import FakeMessage


def Msg(partition: int, offset: int, _error: KafkaError | None = None) -> FakeMessage:  # noqa: N802
    return FakeMessage(b"v", b"k", partition, offset, "t", _error)


class ScriptedConsumer:
    """Hands out ``script`` one consume call at a time, then nothing; records every call."""

    def __init__(self, script=None, journal=None) -> None:
        self.script = list(script or [])
        self.journal = journal if journal is not None else []
        self.commit_failures: list[BaseException] = []
        self.closed = False

    def consume(self, num_messages=1, timeout=0.0):
        """One scripted read per call, at most ``num_messages`` of it (the rest waits, as in
        librdkafka's queue)."""
        ready = self.script[0] if self.script else []
        self.journal.append("consume")
        if not ready:
            if self.script:
                self.script.pop(0)
            return []
        taken, rest = ready[:num_messages], ready[num_messages:]
        if rest:
            self.script[0] = rest
        else:
            self.script.pop(0)
        return taken

    def commit(self, offsets=None, asynchronous=True):
        if self.commit_failures:
            raise self.commit_failures.pop(0)
        self.journal.append(("commit", sorted((tp.partition, tp.offset) for tp in offsets)))

    def assign(self, parts):
        self.journal.append(("assign", sorted((tp.partition, tp.offset) for tp in parts)))

    def assignment(self):
        return []

    def pause(self, _parts):
        self.journal.append("pause")

    def resume(self, _parts):
        self.journal.append("resume")

    def subscribe(self, topics, on_assign=None, on_revoke=None):
        self.on_assign, self.on_revoke = on_assign, on_revoke
        self.journal.append(("subscribe", list(topics)))

    def consumer_group_metadata(self):
        return object()

    def close(self):
        self.closed = True


class Recorder(Stage):
    """A stage that writes what it is asked into the journal; its effect is ``effect`` (a Future) or
    done at once."""

    noun = "things"

    def __init__(self, journal: list, due_at: int = 1) -> None:
        self.journal = journal
        self.due_at = due_at
        self.taken: list = []
        self.effect: Future | None = None
        self.reread = False
        self.abandon = False
        self.closed = False

    def take(self, msg):
        self.taken.append(msg.offset())

    def due(self, batch: Batch) -> bool:
        return batch.records >= self.due_at

    def flush(self):
        if self.reread:
            self.reread = False
            raise Reread
        taken, self.taken = self.taken, []
        self.journal.append(("flush", taken))
        return self.effect if self.effect is not None else done_future(taken)

    def produce(self, result):
        if self.abandon:
            raise Abandoned
        self.journal.append(("produce", result))

    def settled(self, result, committed):
        self.journal.append(("settled", result, committed))

    def drop(self):
        self.taken = []

    def close(self):
        self.closed = True


def _loop(script=(), *, due_at=1, topics=("t",), replace_failed=True, **kw):
    journal: list = []
    stage = Recorder(journal, due_at)
    consumers: list[ScriptedConsumer] = []

    def new_consumer():
        consumers.append(ScriptedConsumer(script if not consumers else [], journal))
        return consumers[-1]

    loop = StageLoop(stage, new_consumer, ConsumerCommit(reread="read again"), topics=topics,
                     replace_failed=replace_failed, backoff_initial_s=0.0, backoff_max_s=0.0, **kw)
    return loop, stage, journal, consumers


def _error(code, *, fatal=False, retriable=False, abort=False):
    return KafkaException(KafkaError(code, "scripted", fatal=fatal, retriable=retriable,
                                     txn_requires_abort=abort))


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, saved[0])
    signal.signal(signal.SIGINT, saved[1])


def test_flush_then_produce_then_commit_then_settled_with_the_next_offset_per_partition():
    loop, _stage, journal, _ = _loop(due_at=3)
    for msg in [Msg(0, 5), Msg(1, 7), Msg(0, 6)]:
        loop.take(msg)
    loop.checkpoint()
    assert journal == [("flush", [5, 7, 6]), ("produce", [5, 7, 6]), ("commit", [(0, 7), (1, 8)]),
                       ("settled", [5, 7, 6], True)]
    assert loop.positions == {("t", 0): 7, ("t", 1): 8}
    assert loop.batch.records == 0 and not loop.batch.offsets


def test_nothing_is_committed_before_the_effect_is_done_and_the_next_batch_is_read_meanwhile():
    loop, stage, journal, _ = _loop(patience_s=0.01)
    stage.effect = Future()
    loop.take(Msg(0, 1))
    loop.checkpoint()
    assert loop.inflight is not None and not any(e[0] == "commit" for e in journal if isinstance(e, tuple))
    loop.take(Msg(0, 2))  # read while the first batch's effect runs
    first, stage.effect = stage.effect, None
    threading.Timer(0.1, first.set_result, [[1]]).start()
    loop.checkpoint()  # waits for the first (paused: it took longer than patience_s), commits it
    kinds = [e if isinstance(e, str) else e[0] for e in journal]
    assert kinds.index("pause") < kinds.index("resume") < kinds.index("commit")
    assert journal.index(("commit", [(0, 2)])) < journal.index(("flush", [2]))
    assert journal[-2:] == [("commit", [(0, 3)]), ("settled", [2], True)]


def test_records_handed_out_while_paused_are_taken_after_the_commit():
    loop, stage, journal, consumers = _loop(patience_s=0.01, due_at=99)
    stage.effect = Future()
    consumers[0].script = [[Msg(0, 9)]]
    loop.take(Msg(0, 1))
    loop.checkpoint()
    threading.Timer(0.1, stage.effect.set_result, ["first"]).start()
    loop.complete()
    assert stage.taken == [9] and loop.batch.offsets == {("t", 0): 10}


def test_a_failed_commit_is_not_fatal_and_the_loop_goes_on(caplog):
    loop, _stage, journal, consumers = _loop()
    consumers[0].commit_failures = [_error(KafkaError.UNKNOWN_MEMBER_ID)]
    loop.take(Msg(0, 1))
    loop.checkpoint()
    assert ("settled", [1], False) in journal and loop.positions == {}
    assert "commit of offsets" in caplog.text and "read again" in caplog.text
    assert loop.failed is None and not any(e[0] == "assign" for e in journal if isinstance(e, tuple))
    loop.take(Msg(0, 2))
    loop.checkpoint()
    assert journal[-2:] == [("commit", [(0, 3)]), ("settled", [2], True)]


def test_a_failed_commit_rewinds_an_assigned_consumer_to_the_last_committed_positions():
    loop, _stage, journal, consumers = _loop(topics=None)
    loop.positions = {("t", 0): 4}
    consumers[0].commit_failures = [_error(KafkaError.UNKNOWN_MEMBER_ID)]
    loop.take(Msg(0, 4))
    loop.checkpoint()
    assert journal[-2:] == [("assign", [(0, 4)]), ("settled", [4], False)]


def test_a_consumer_that_cannot_rewind_is_replaced_or_ends_the_loop(caplog):
    """A static member fenced by another may learn it from a failed commit first; the seek back that
    follows fails (``Local: Erroneous state``), and the consumer is replaced as after a failed read,
    instead of the error ending the stage (the rater: a stage that keeps partition state)."""
    def cannot(_tp):
        raise _error(KafkaError._STATE)

    for replace_failed in (True, False):
        journal: list = []
        consumers: list[ScriptedConsumer] = []

        def new_consumer(journal=journal, consumers=consumers):
            consumers.append(ScriptedConsumer([], journal))
            consumers[-1].seek = cannot
            return consumers[-1]

        loop = StageLoop(Owner(journal), new_consumer, ConsumerCommit(reread="x"), topics=["t"],
                         replace_failed=replace_failed, backoff_initial_s=0.0, backoff_max_s=0.0)
        loop.positions = {("t", 0): 4}
        consumers[0].commit_failures = [_error(KafkaError.UNKNOWN_MEMBER_ID)]
        loop.take(Msg(0, 4))
        if not replace_failed:
            with pytest.raises(KafkaException):
                loop.checkpoint()
            continue
        loop.checkpoint()
        assert loop.failed is not None and loop.failed.code() == KafkaError._STATE
        assert ("settled", [4], False) in journal and "could not rewind" in caplog.text
        loop.replace_consumer()
        assert consumers[0].closed and loop.consumer is consumers[1] and loop.failed is None
        assert journal[-1] == ("subscribe", ["t"])  # its assignment starts at the committed offsets


def test_a_commit_failed_for_good_replaces_the_consumer_or_ends_the_loop():
    loop, _stage, journal, consumers = _loop()
    consumers[0].commit_failures = [_error(KafkaError._FATAL, fatal=True)]
    loop.take(Msg(0, 1))
    loop.checkpoint()
    assert loop.failed is not None and ("settled", [1], False) in journal
    loop.replace_consumer()
    assert consumers[0].closed and loop.consumer is consumers[1] and loop.failed is None
    assert journal[-1] == ("subscribe", ["t"])

    loop, _stage, _journal, consumers = _loop(replace_failed=False)
    consumers[0].commit_failures = [_error(KafkaError._FATAL, fatal=True)]
    loop.take(Msg(0, 1))
    with pytest.raises(ConsumerFailed):
        loop.checkpoint()


def test_a_failed_consumer_drops_what_it_read_and_its_replacement_reads_it_again():
    loop, stage, _journal, consumers = _loop(due_at=99)
    loop.take(Msg(0, 1))
    assert not loop.take(Msg(0, 2, _error=KafkaError(KafkaError._FATAL, "fenced", fatal=False)))
    assert loop.failed is not None
    loop.replace_consumer()
    assert stage.taken == [] and not loop.batch.offsets and len(consumers) == 2

    loop, _stage, _journal, _ = _loop(replace_failed=False)
    with pytest.raises(ConsumerFailed):
        loop.take(Msg(0, 2, _error=KafkaError(KafkaError._FATAL, "fenced", fatal=False)))


def test_a_failed_consumer_that_never_closes_is_left_behind_and_replaced(monkeypatch, caplog):
    """librdkafka's close can hang while no broker names a coordinator: the loop goes on."""
    loop, _stage, journal, consumers = _loop(due_at=99)
    monkeypatch.setattr(StageLoop, "CLOSE_PATIENCE_S", 0.1)
    release = threading.Event()
    consumers[0].close = lambda: release.wait(10)
    loop.take(Msg(0, 1, _error=KafkaError(KafkaError._FATAL, "fenced", fatal=False)))
    try:
        loop.replace_consumer()
        assert len(consumers) == 2 and loop.consumer is consumers[1] and loop.failed is None
        assert journal[-1] == ("subscribe", ["t"])
        assert "did not close within" in caplog.text
    finally:
        release.set()


def test_reread_rewinds_and_commits_nothing():
    loop, stage, journal, _ = _loop(topics=None)
    loop.positions = {("t", 0): 3}
    stage.reread = True
    loop.take(Msg(0, 3))
    loop.checkpoint()
    assert journal == [("assign", [(0, 3)])] and loop.inflight is None and not loop.batch.offsets


def test_an_abandoned_effect_leaves_its_offsets_uncommitted():
    loop, stage, journal, _ = _loop()
    stage.abandon = True
    loop.take(Msg(0, 1))
    loop.checkpoint()
    assert journal == [("flush", [1])] and loop.positions == {}


def test_a_revoked_partition_checkpoints_the_pending_batch_first():
    loop, _stage, journal, consumers = _loop(due_at=99)
    loop.take(Msg(0, 1))
    loop._on_revoke(consumers[0], [])
    assert journal[-2:] == [("commit", [(0, 2)]), ("settled", [1], True)]


class Owner(Recorder):
    """A stage whose memory follows its partitions (the rater's balances)."""

    keeps_partition_state = True

    def assigned(self, partitions):
        self.journal.append(("assigned", partitions))


def test_a_stage_that_keeps_partition_state_reloads_after_the_offsets_are_stable_and_starts_there():
    from confluent_kafka import TopicPartition

    journal: list = []
    consumer = ScriptedConsumer([], journal)
    answers = [_error(KafkaError._TIMED_OUT, retriable=True),  # a previous owner's transaction open
               [TopicPartition("t", 0, 7), TopicPartition("t", 1, -1001)]]

    def committed(parts, timeout):
        journal.append("committed")
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    consumer.committed = committed
    consumer.seek = lambda tp: journal.append(("seek", tp.partition, tp.offset))
    loop = StageLoop(Owner(journal), lambda: consumer, ConsumerCommit(reread="x"), topics=["t"],
                     backoff_initial_s=0.0)
    loop._subscribe()
    assert consumer.on_assign is not None
    consumer.on_assign(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])
    # nothing is reloaded before the committed offsets answer; the consumer starts at them
    assert journal[1:] == ["committed", "committed", ("assigned", [("t", 0), ("t", 1)]),
                       ("assign", [(0, 7), (1, -2)])]
    loop.take(Msg(0, 7))
    loop.rewind()  # an aborted transaction: back to the committed offsets
    assert journal[-2:] == [("seek", 0, 7), ("seek", 1, -2)]
    consumer.on_revoke(consumer, [TopicPartition("t", 1)])
    assert 1 not in {p for _t, p in loop.positions}


def test_run_checkpoints_each_due_batch_and_exits_when_idle():
    loop, stage, journal, consumers = _loop([[Msg(0, 1), Msg(0, 2)], [], [Msg(1, 1), Msg(1, 2)]],
                                            due_at=2, idle_exit_s=0.05, consume_timeout_s=0.0)
    assert loop.run() == 0
    commits = [e for e in journal if isinstance(e, tuple) and e[0] == "commit"]
    assert commits == [("commit", [(0, 3)]), ("commit", [(1, 3)])]
    assert journal[0] == ("subscribe", ["t"])
    assert stage.closed and consumers[0].closed and loop.stopping


def test_no_idle_exit_while_a_batch_is_pending():
    loop, _stage, journal, consumers = _loop([[Msg(0, 1)]], due_at=2, idle_exit_s=0.0, consume_timeout_s=0.0)
    original = consumers[0].consume

    def consume(**kw):
        if journal.count("consume") == 5:
            loop.stop()
        return original(**kw)

    consumers[0].consume = consume
    assert loop.run() == 0
    assert journal.count("consume") > 5  # no idle exit with a batch pending: stopped instead
    assert ("commit", [(0, 2)]) in journal  # the pending batch is checkpointed at exit


def test_a_stop_signal_ends_the_loop_after_a_last_checkpoint():
    loop, stage, journal, consumers = _loop([[Msg(0, 1)]], due_at=99, consume_timeout_s=0.0)
    start_calls = []
    consumers[0].script.append([])
    original = consumers[0].consume

    def consume(**kw):
        out = original(**kw)
        if not out:
            signal.raise_signal(signal.SIGTERM)
        return out

    consumers[0].consume = consume
    assert loop.run(start=lambda: start_calls.append(1)) == 0
    assert start_calls == [1] and ("commit", [(0, 2)]) in journal and stage.closed


# --- the transactional commit ----------------------------------------------------------------------

class TxnProducer:
    def __init__(self, journal, failures=None) -> None:
        self.journal = journal
        self.failures = failures or {}

    def _call(self, name):
        self.journal.append(name)
        if self.failures.get(name):
            raise self.failures[name].pop(0)

    def begin_transaction(self):
        self._call("begin")

    def send_offsets_to_transaction(self, parts, *_):
        self._call("send_offsets")

    def commit_transaction(self, *_):
        self._call("commit_transaction")

    def abort_transaction(self, *_):
        self._call("abort")


def _txn_loop(failures=None):
    journal: list = []
    stage = Recorder(journal)
    producer = TxnProducer(journal, failures)
    loop = StageLoop(stage, lambda: ScriptedConsumer([], journal),
                     TransactionCommit(producer, "tid", 0.2, fenced_by="another one"))
    loop.positions = {("t", 0): 0}
    return loop, journal


def test_a_transaction_holds_the_outputs_and_the_offsets():
    loop, journal = _txn_loop()
    loop.take(Msg(0, 0))
    loop.checkpoint()
    assert journal == [("flush", [0]), "begin", ("produce", [0]), "send_offsets", "commit_transaction",
                       ("settled", [0], True)]
    assert loop.positions == {("t", 0): 1}


def test_an_aborted_transaction_rewinds_and_being_fenced_raises(caplog):
    loop, journal = _txn_loop({"commit_transaction": [_error(KafkaError._MSG_TIMED_OUT, abort=True)]})
    loop.take(Msg(0, 0))
    loop.checkpoint()
    assert journal[-3:] == ["abort", ("assign", [(0, 0)]), ("settled", [0], False)]
    assert loop.positions == {("t", 0): 0}

    loop, journal = _txn_loop({"commit_transaction": [_error(KafkaError._FENCED, fatal=True)]})
    loop.take(Msg(0, 0))
    with pytest.raises(KafkaException):
        loop.checkpoint()
    assert "fenced" in caplog.text and "abort" not in journal


def test_a_producer_that_cannot_abort_is_replaced_and_the_batch_read_again(monkeypatch, caplog):
    """After a broker pause librdkafka's transactional producer may stay wedged: every abort times
    out. Past ABORT_PATIENCE_S a new producer with the same id takes over (its init_transactions
    aborts the open transaction), and the batch is read again from the committed positions."""
    monkeypatch.setattr(TransactionCommit, "ABORT_PATIENCE_S", 0.3)
    journal: list = []
    timeout = _error(KafkaError._TIMED_OUT, retriable=True)
    wedged = TxnProducer(journal, {"commit_transaction": [_error(KafkaError._MSG_TIMED_OUT, abort=True)],
                                   "abort": [timeout] * 100})
    fresh = TxnProducer(journal, {"init_transactions": [timeout]})
    fresh.init_transactions = lambda *_: fresh._call("init_transactions")
    made: list = []
    committer = TransactionCommit(wedged, "tid", 0.2, fenced_by="another one",
                                  new_producer=lambda: made.append(fresh) or fresh)
    loop = StageLoop(Recorder(journal), lambda: ScriptedConsumer([], journal), committer)
    loop.positions = {("t", 0): 0}
    loop.take(Msg(0, 0))
    with caplog.at_level(logging.WARNING):
        loop.checkpoint()
    assert committer.producer is fresh and len(made) == 2  # the first init timed out: tried again
    assert "could not abort within" in caplog.text
    assert journal[-3:] == ["init_transactions", ("assign", [(0, 0)]), ("settled", [0], False)]
    assert loop.positions == {("t", 0): 0}  # nothing committed: the batch is read again
    loop.take(Msg(0, 0))
    loop.checkpoint()  # and the new producer commits it
    assert journal[-2:] == ["commit_transaction", ("settled", [0], True)]


def test_a_read_takes_what_is_ready_and_waits_only_for_a_first_record():
    """A batch closes when the input runs dry: no read waits once a record is in hand."""
    waits: list[tuple[int, float]] = []
    loop, _stage, _journal, consumers = _loop([[], [Msg(0, 1)], [Msg(0, 2), Msg(0, 3)]],
                                              consume_max=10, consume_timeout_s=0.5)
    original = consumers[0].consume

    def consume(num_messages=1, timeout=0.0):
        waits.append((num_messages, timeout))
        return original(num_messages=num_messages, timeout=timeout)

    consumers[0].consume = consume
    got = loop.read()
    assert [m.offset() for m in got] == [1, 2, 3] and loop.batch.input_dry
    assert waits == [(10, 0), (1, 0.5), (9, 0)]  # only the read for a first record waited
    assert loop.read() == [] and waits[-1] == (1, 0.5)


def test_a_read_waits_no_longer_than_the_pending_batch_or_the_effect_in_flight_allows():
    """A batch due in 30 ms by the stage's clocks, or an effect in flight, shortens the wait for a
    first record: neither waits out a 0.5 s poll for a record that may not come."""
    waits: list[float] = []
    loop, stage, _journal, consumers = _loop([[], [Msg(0, 1)]], due_at=99, consume_max=10,
                                             consume_timeout_s=0.5)
    original = consumers[0].consume

    def consume(num_messages=1, timeout=0.0):
        waits.append(timeout)
        return original(num_messages=num_messages, timeout=timeout)

    consumers[0].consume = consume
    stage.due_in = lambda batch: 0.03
    for msg in loop.read():  # nothing pending yet: the full wait
        loop.take(msg)
    assert waits[1] == 0.5 and loop.batch.offsets
    loop.read()  # a batch pending, due in 30 ms
    assert waits[-1] == 0.03
    loop.inflight = object()  # an effect in flight: checked every INFLIGHT_CHECK_S
    loop.read()
    assert waits[-1] == StageLoop.INFLIGHT_CHECK_S
    stage.due_in = lambda batch: -1.0  # overdue: no wait at all
    loop.read()
    assert waits[-1] == 0.0


def test_the_sink_says_when_its_batch_is_due_by_its_clocks(monkeypatch):
    from rating_stream import sink as sink_module
    from rating_stream.sink import CdrSink, SinkOptions

    monkeypatch.setattr(sink_module, "Consumer", lambda config: ScriptedConsumer([], []))
    monkeypatch.setattr(sink_module, "Producer", lambda config: object())
    monkeypatch.setattr(sink_module, "clickhouse_client", lambda *a, **k: object())
    sink = CdrSink(SinkOptions(flush_interval_s=1.0, min_flush_interval_s=0.1))
    now = time.monotonic()
    batch = Batch(first_at=now - 0.2, input_dry=False)
    sink.flushed_at = now - 0.04
    assert 0.75 < sink.due_in(batch) <= 0.8  # more is waiting: at the latest, flush_interval_s
    batch.input_dry = True
    assert 0.0 < sink.due_in(batch) <= 0.06  # dry: once min_flush_interval_s has passed


def test_a_full_read_says_more_is_waiting():
    loop, _stage, _journal, _consumers = _loop([[Msg(0, i) for i in range(5)]], consume_max=3)
    assert len(loop.read()) == 3 and not loop.batch.input_dry
    assert len(loop.read()) == 2 and loop.batch.input_dry


def test_pace_flushes_a_full_batch_a_late_one_and_a_dry_one_once_the_interval_passed():
    from callback.stage_loop import Pace

    pace = Pace(most=100, at_latest_s=1.0, min_interval_s=0.1)
    now = 1000.0
    flowing = Batch(records=10, first_at=now - 0.3, input_dry=False)
    assert pace.due_in(flowing, flushed_at=now - 0.05, now=now) == pytest.approx(0.7)  # more is waiting
    assert not pace.due(flowing, flushed_at=now - 5, now=now)
    assert pace.due(Batch(records=100, first_at=now, input_dry=False), flushed_at=now, now=now)  # full
    assert pace.due(Batch(records=1, first_at=now - 1.0, input_dry=False), flushed_at=now, now=now)  # late
    dry = Batch(records=3, first_at=now - 0.01, input_dry=True)
    assert pace.due_in(dry, flushed_at=now - 0.04, now=now) == pytest.approx(0.06)
    assert not pace.due(dry, flushed_at=now - 0.04, now=now)
    assert pace.due(dry, flushed_at=now - 0.1, now=now)


def test_the_rater_commits_a_trickle_no_sooner_than_its_interval(monkeypatch):
    from rating_stream import rater as rater_module
    from rating_stream.rater import Rater, RaterOptions

    monkeypatch.setattr(rater_module, "Consumer", lambda config: ScriptedConsumer([], []))
    monkeypatch.setattr(rater_module, "Producer", lambda config: object())
    rater = Rater(RaterOptions(batch_max=50, min_commit_interval_s=0.1))
    now = time.monotonic()
    rater.flushed_at = now - 0.03
    dry = Batch(records=2, first_at=now, input_dry=True)
    assert not rater.due(dry) and 0.05 < rater.due_in(dry) <= 0.07
    assert rater.due(Batch(records=50, first_at=now, input_dry=False))  # a full transaction goes at once
    rater.flushed_at = now - 0.2
    assert rater.due(dry)


def test_the_loop_spaces_out_garbage_collections_while_it_runs_and_restores_them_after():
    import gc

    from callback.stage_loop import GC_THRESHOLDS

    before = gc.get_threshold()
    assert before != GC_THRESHOLDS
    seen = []
    loop, stage, _journal, _consumers = _loop([[Msg(0, 0)], [Msg(0, 1)]], idle_exit_s=0.01)
    take = stage.take
    stage.take = lambda msg: (seen.append(gc.get_threshold()), take(msg))
    loop.run()
    assert seen and set(seen) == {GC_THRESHOLDS}
    assert gc.get_threshold() == before
