"""The rater and the CDR sink around their pure cores, with Kafka and ClickHouse replaced by
scripted fakes: what each does when the broker times out, aborts, drops the group member, or when
ClickHouse refuses a row (issue items 2, 3, 11, 12). The same behaviours run on the real stack in
``tests/integration/test_rating_refusals.py`` and ``test_rating_pause.py``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from clickhouse_driver import errors as ch_errors
from confluent_kafka import KafkaError, KafkaException
from typer.testing import CliRunner

from callback.reference import ReferenceData
from callback.stage_loop import TransactionCommit
from rating_stream import rater as rater_module
from rating_stream import sink as sink_module
from rating_stream.cdr import cdr_json
from rating_stream.engine import CompiledTariff, quote
from rating_stream.loadgen import make_legs, reference_records, tariffs
from rating_stream.rater import Rater, RaterOptions
from rating_stream.sink import CdrSink, SinkOptions
from rating_stream.wire import from_model
from schemas.callback import PayerKind
from tests.unit.kafka_fakes import FakeMessage

RUN = "stages"


# --- fakes ------------------------------------------------------------------------------------

def _kafka_error(code: int, *, retriable: bool = False, abort: bool = False, fatal: bool = False):
    error = KafkaError(code, "scripted", fatal=fatal, retriable=retriable, txn_requires_abort=abort)
    return KafkaException(error)


@dataclass
class FakeProducer:
    """A transactional producer whose calls fail as scripted: ``failures[name]`` is a list of
    exceptions raised by the next calls of that method, in order."""

    config: dict = field(default_factory=dict)
    failures: dict[str, list[BaseException]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    open: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)
    committed: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        pending = self.failures.get(name)
        if pending:
            raise pending.pop(0)

    def init_transactions(self, *_):
        self._call("init_transactions")

    def begin_transaction(self):
        self._call("begin_transaction")
        self.open = []

    def produce(self, topic, value=None, key=None):
        self.open.append((topic, key, value))

    def send_offsets_to_transaction(self, *_):
        self._call("send_offsets_to_transaction")

    def commit_transaction(self, *_):
        self._call("commit_transaction")
        self.committed += self.open
        self.open = []

    def abort_transaction(self, *_):
        self._call("abort_transaction")
        self.open = []

    def poll(self, *_):
        return 0

    def flush(self, *_):
        self.committed += self.open  # a plain producer: everything produced is delivered
        self.open = []
        return 0

    def __len__(self):
        return len(self.open)


class FakeConsumer:
    def __init__(self, config: dict | None = None) -> None:
        self.config = config or {}
        self.assigned: list = []
        self.seeks: list = []
        self.commits: list = []
        self.commit_failures: list[BaseException] = []

    def assign(self, parts):
        self.assigned.append([(tp.topic, tp.partition, tp.offset) for tp in parts])

    def seek(self, tp):
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def assignment(self):
        return []

    def consumer_group_metadata(self):
        return object()

    def commit(self, offsets=None, asynchronous=True):
        if self.commit_failures:
            raise self.commit_failures.pop(0)
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def pause(self, *_):
        pass

    def resume(self, *_):
        pass

    def consume(self, *_, **__):
        return []

    def close(self):
        self.closed = True

    def subscribe(self, topics, on_assign=None, on_revoke=None):
        self.subscribed = list(topics)


class FakeFeed:
    def __init__(self, *_args, **_kwargs) -> None:
        self.data = ReferenceData()
        for topic, key, value in reference_records(RUN):
            self.data.apply(topic, key.decode(), value)
        self.catch_up_failures: list[BaseException] = []

    def catch_up(self):
        if self.catch_up_failures:
            raise self.catch_up_failures.pop(0)
        return 0

    def poll(self, *_):
        return 0

    def close(self):
        pass


@pytest.fixture()
def rater(monkeypatch) -> Rater:
    monkeypatch.setattr(rater_module, "Producer", lambda config: FakeProducer(config))
    monkeypatch.setattr(rater_module, "Consumer", FakeConsumer)
    monkeypatch.setattr(rater_module, "ReferenceFeed", FakeFeed)
    r = Rater(RaterOptions(txn_timeout_s=0.5))
    r.loop.positions = {("callback.legs", 0): 0, ("callback.legs", 1): 0}
    return r


def _process(rater: Rater, msgs: list[FakeMessage]) -> None:
    """What the loop does with one consume call's legs: take them, then checkpoint the batch."""
    for msg in msgs:
        rater.loop.take(msg)
    rater.loop.checkpoint()


def _leg_messages(n: int = 40, start: int = 0) -> list[FakeMessage]:
    legs = list(make_legs(RUN, n))
    return [
        FakeMessage(leg.model_dump_json().encode(), leg.callback_id.encode(), i % 2, start + i,
                    "callback.legs")
        for i, leg in enumerate(legs)
    ]


def _cdr_keys(producer: FakeProducer) -> list[bytes]:
    return [key for topic, key, _v in producer.committed if topic == "cdr.rated"]


# --- item 11: one INFO line per batch for redelivered legs -----------------------------------------

def test_redelivered_legs_are_counted_and_logged_once_per_batch(rater, caplog):
    first = _leg_messages(1)[0]
    again = [FakeMessage(first.value(), first.key(), 0, i + 1, "callback.legs") for i in range(600)]
    with caplog.at_level(logging.DEBUG, logger="rating_stream"):
        _process(rater, [first, *again])
    info = [r for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("rating_stream")]
    assert len(info) == 1, [r.getMessage() for r in info][:5]
    assert "600" in info[0].getMessage() and "redelivered" in info[0].getMessage()
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "redelivered leg" in r.getMessage()]
    assert len(debug) == 600
    assert len(_cdr_keys(rater.producer)) == 1


# --- item 3: the rater never exits over a broker that does not answer -------------------------------

def test_timeouts_of_send_offsets_and_commit_are_retried(rater):
    rater.producer.failures = {
        "send_offsets_to_transaction": [_kafka_error(KafkaError._TIMED_OUT, retriable=True)],
        "commit_transaction": [_kafka_error(KafkaError._TIMED_OUT, retriable=True)] * 2,
    }
    rater.loop.committer.timeout_s = 30.0  # retried within the transaction's lifetime
    msgs = _leg_messages()
    _process(rater, msgs)
    assert len(_cdr_keys(rater.producer)) == len(msgs)
    assert rater.producer.calls.count("commit_transaction") == 3
    assert "abort_transaction" not in rater.producer.calls
    assert rater.loop.positions == {("callback.legs", 0): 39, ("callback.legs", 1): 40}


def test_an_abortable_error_aborts_rewinds_and_the_batch_is_rated_again(rater):
    msgs = _leg_messages()
    rater.producer.failures = {
        "commit_transaction": [_kafka_error(KafkaError._MSG_TIMED_OUT, abort=True)],
        "abort_transaction": [_kafka_error(KafkaError._TIMED_OUT, retriable=True)] * 2,
    }
    before = dict(rater.ledger.items())
    _process(rater, msgs)
    assert _cdr_keys(rater.producer) == []
    assert dict(rater.ledger.items()) == before  # nothing charged by an aborted transaction
    assert rater.producer.calls.count("abort_transaction") == 3  # retried until done
    assert rater.consumer.seeks[-2:] == [("callback.legs", 0, 0), ("callback.legs", 1, 0)]
    _process(rater, msgs)  # read again from the rewound offsets: rated once
    assert len(_cdr_keys(rater.producer)) == len(msgs) == len(set(_cdr_keys(rater.producer)))


def test_a_broker_silent_for_longer_than_a_transaction_aborts_instead_of_exiting(rater):
    """send_offsets keeps timing out for half the transaction timeout (0.25 s of 0.5 s here): abort,
    take a new producer (librdkafka can keep waiting on a coordinator that left the cluster, and a
    new producer looks it up afresh), and read the batch again. This used to raise, so the rater
    exited; then it aborted but kept the wedged producer for ever."""
    wedged = rater.producer
    wedged.failures = {
        "send_offsets_to_transaction": [_kafka_error(KafkaError._TIMED_OUT, retriable=True)] * 50,
    }
    _process(rater, _leg_messages())
    assert "abort_transaction" in wedged.calls
    assert _cdr_keys(wedged) == []
    assert rater.producer is not wedged and rater.producer.calls == ["init_transactions"]
    _process(rater, _leg_messages())
    assert len(_cdr_keys(rater.producer)) == 40
    assert wedged.failures["send_offsets_to_transaction"], "the wedged producer is not used again"


def test_a_transactional_call_that_never_returns_gets_a_new_producer(rater, monkeypatch):
    """send_offsets_to_transaction blocks past its own timeout (seen with librdkafka 2.16 after the
    group coordinator's broker died): the rater stops waiting, takes a new producer (whose
    init_transactions aborts the open transaction) and rates the batch again with it."""
    monkeypatch.setattr(TransactionCommit, "CALL_GRACE_S", 0.1)
    release = threading.Event()
    wedged = rater.producer
    wedged.send_offsets_to_transaction = lambda *_: release.wait(10)
    try:
        _process(rater, _leg_messages())
        assert rater.producer is not wedged and rater.producer.calls == ["init_transactions"]
        assert _cdr_keys(wedged) == []
        _process(rater, _leg_messages())
        assert len(_cdr_keys(rater.producer)) == 40
    finally:
        release.set()


def test_being_fenced_still_exits(rater):
    rater.producer.failures = {"commit_transaction": [_kafka_error(KafkaError._FENCED, fatal=True)]}
    with pytest.raises(KafkaException):
        _process(rater, _leg_messages())


def test_a_reference_catch_up_that_cannot_reach_kafka_retries_the_batch_not_dead_letters(rater, monkeypatch):
    monkeypatch.setattr(rater_module, "_RETRY_PAUSE_S", 0.0)
    msgs = _leg_messages()
    ghost = json.loads(msgs[0].value())
    ghost["payer"] = {"kind": "user", "id": "not-fetched-yet"}
    ghost["leg_id"] = "ghost:a:0"
    ghost_msg = FakeMessage(json.dumps(ghost).encode(), b"g", 0, 99, "callback.legs")
    feed = rater.reference
    feed.catch_up_failures = [_kafka_error(KafkaError._TRANSPORT)]
    _process(rater, [*msgs, ghost_msg])
    assert "begin_transaction" not in rater.producer.calls  # nothing produced, nothing dead-lettered
    assert rater.consumer.seeks[-2:] == [("callback.legs", 0, 0), ("callback.legs", 1, 0)]


# --- item 2: the sink sets a refused row aside and stores the rest ---------------------------------

class FakeClickHouse:
    """Refuses, like the driver does, any row whose q850_cause a UInt16 cannot hold; fails as
    scripted (``failures``) first."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.inserts = 0
        self.failures: list[BaseException] = []

    def execute(self, _sql, columns, columnar=True):
        self.inserts += 1
        if self.failures:
            raise self.failures.pop(0)
        rows = list(zip(*columns, strict=True))
        q850 = sink_module.CDR_COLUMNS.index("q850_cause")
        for row in rows:
            if row[q850] is not None and not 0 <= row[q850] <= 65535:
                raise ch_errors.TypeMismatchError(
                    "Code: 53. Type mismatch in VALUES section. Column q850_cause: ushort format requires "
                    "0 <= number <= 65535"
                )
        self.rows += rows

    def disconnect(self):
        pass


@pytest.fixture()
def sink(monkeypatch) -> CdrSink:
    client = FakeClickHouse()
    monkeypatch.setattr(sink_module, "clickhouse_client", lambda: client)
    monkeypatch.setattr(sink_module, "Consumer", FakeConsumer)
    monkeypatch.setattr(sink_module, "Producer", lambda config: FakeProducer(config))
    s = CdrSink(SinkOptions(group_id="g", instance="x", backoff_initial_s=0.01, backoff_max_s=0.02))
    yield s
    s._inserter.shutdown(wait=True)


def _cdr_messages(n: int, bad: set[int] = frozenset()) -> list[FakeMessage]:
    compiled = {t.tariff_id: CompiledTariff.build(t) for t in tariffs(RUN)}
    out = []
    for i, leg in enumerate(make_legs(RUN, n)):
        tariff = compiled[f"{RUN}-origins" if leg.payer.kind is PayerKind.CALLBACK_USER else f"{RUN}-retail"]
        value = cdr_json(from_model(leg), quote(tariff, leg.dst, 0, answered=False), version=1,
                         rated_at=datetime.now(UTC), source="t")
        if i in bad:
            value = json.dumps(json.loads(value) | {"q850_cause": 70000}).encode()
        out.append(FakeMessage(value, leg.leg_id.encode(), i % 3, i, "cdr.rated"))
    return out


def _store(sink: CdrSink, msgs: list[FakeMessage]) -> None:
    for msg in msgs:
        sink.loop.take(msg)
    sink.loop.checkpoint()
    sink.loop.complete()


def test_refused_rows_are_found_by_splitting_dead_lettered_and_the_rest_stored(sink):
    msgs = _cdr_messages(100, bad={7, 50})
    _store(sink, msgs)
    stored = {row[0] for row in sink.client.rows}
    assert stored == {m.key().decode() for i, m in enumerate(msgs) if i not in (7, 50)}
    letters = [json.loads(v) for topic, _k, v in sink._dlq.committed if topic == "dlq.cdr.rated"]
    assert sorted(letter["source_offset"] for letter in letters) == [7, 50]
    for letter in letters:
        assert letter["error_kind"] == "refused_by_clickhouse" and "q850_cause" in letter["reason"]
        assert base64.b64decode(letter["value_b64"]) == msgs[letter["source_offset"]].value()
    assert {p: o for _t, p, o in sink.consumer.commits[-1]} == {0: 100, 1: 98, 2: 99}
    assert sink.client.inserts <= 1 + 2 * 2 * 7  # a split per level per refused row, at most
    assert sink.inserted == 98


def test_an_unreachable_server_is_retried_not_split(sink):
    sink.client.failures = [ch_errors.NetworkError("Connection refused"), ConnectionResetError(),
                            ch_errors.ServerException("Table callback.cdr doesn't exist", code=60)]
    msgs = _cdr_messages(10)
    _store(sink, msgs)
    assert sink.client.inserts == 4 and len(sink.client.rows) == 10
    assert sink._dlq is None


def test_a_failed_commit_after_the_group_dropped_us_is_not_fatal(sink, caplog):
    sink.consumer.commit_failures = [_kafka_error(KafkaError.UNKNOWN_MEMBER_ID)]
    with caplog.at_level(logging.WARNING):
        _store(sink, _cdr_messages(10))
    assert "commit of offsets" in caplog.text and "read and inserted again" in caplog.text
    _store(sink, _cdr_messages(5))  # and it carries on
    assert sink.consumer.commits and len(sink.client.rows) == 15


@dataclass
class FatalError:
    """A consumer error record as librdkafka hands it out when the static member is fenced: code
    ``_FATAL``, while the record's own ``fatal()`` flag may be False."""

    def error(self):
        return KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer with same "
                          "group.instance.id", fatal=False)


def test_a_consumer_fenced_after_a_pause_is_replaced_and_the_uncommitted_cdrs_read_again(sink, caplog):
    first = sink.consumer
    for msg in _cdr_messages(4):
        sink.loop.take(msg)
    sink.loop.take(FatalError())
    assert sink.loop.failed is not None
    with caplog.at_level(logging.ERROR):
        sink.loop.replace_consumer()
    assert "replacing it" in caplog.text and "4 CDRs not committed" in caplog.text
    assert first.closed and sink.consumer is not first and sink.consumer.subscribed == ["cdr.rated"]
    assert sink.consumer.config["group.instance.id"] == "g-x"
    assert not sink._rows and not sink.loop.batch.offsets  # dropped: the new consumer reads them again
    assert sink.loop.failed is None
    _store(sink, _cdr_messages(3))  # and the new consumer carries on
    assert len(sink.client.rows) == 3 and sink.consumer.commits


def test_a_commit_fenced_for_good_replaces_the_consumer_instead_of_exiting(sink):
    sink.consumer.commit_failures = [_kafka_error(KafkaError._FATAL, fatal=True)]
    _store(sink, _cdr_messages(5))
    assert len(sink.client.rows) == 5  # stored; read again by the next consumer, FINAL collapses
    assert sink.loop.failed is not None


# --- item 12: --instance names the static member ------------------------------------------------

def test_instance_names_the_static_group_member(sink):
    assert sink.consumer.config["group.instance.id"] == "g-x"


def test_cdr_sink_command_passes_its_instance(monkeypatch):
    from callback.cli import app

    seen = []
    monkeypatch.setattr(sink_module, "run_sink", lambda opts: seen.append(opts) or 0)
    result = CliRunner().invoke(app, ["cdr-sink", "--instance", "lagos-2", "--group-id", "grp"])
    assert result.exit_code == 0, result.output
    assert seen[0].instance == "lagos-2" and seen[0].group_id == "grp"


def test_a_consumer_replaced_again_and_again_without_a_commit_means_a_twin_and_the_rater_exits(rater):
    rater.replaced()
    rater.replaced()  # a broker pause may fence a static member by its own rejoin: go on
    _process(rater, _leg_messages())  # a commit in between: the count starts again
    rater.replaced()
    rater.replaced()
    with pytest.raises(SystemExit):
        rater.replaced()  # another rater with our --instance keeps taking our membership
