"""What the pipeline cannot store or price is set aside with a reason, never a crash or a stall
(issue items 1, 2 and 12), on the real stack with the real ``callback`` processes.

Each test uses its own topics and consumer groups (``test.<run>.*``), so a record made to be
refused never reaches the shared pipeline of other tests; the reference data is on the shared
``config.*`` topics, under ids of the run.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from callback.kafka_io import base_config
from callback.topic_reader import read_topics
from infra.process import wait_until
from infra.rig import CallbackProcess
from rating_stream.cdr import cdr_json, cdr_row
from rating_stream.engine import CompiledTariff, quote
from rating_stream.loadgen import leg_records, make_legs, produce, publish_reference, tariffs
from rating_stream.wire import from_model
from schemas.callback import PayerKind
from schemas.envelope import MONEY_MAX, DeadLetter
from schemas.rating import RatedCdr
from schemas.reference import CONNECTION_FEE_MAX, MAX_BILLED_S, RATE_MAX
from schemas.topics import CONFIG_TARIFFS, CONFIG_USERS
from tests.rigs import committed_keys, rater_args, run_topics

pytestmark = pytest.mark.integration


def _dead_letters(topic: str, keys: set[bytes]) -> dict[bytes, list[DeadLetter]]:
    found: dict[bytes, list[DeadLetter]] = {}

    def on(msg):
        if msg.key() in keys:
            found.setdefault(msg.key(), []).append(DeadLetter.model_validate_json(msg.value()))

    read_topics("dlq-reader", [topic], on)
    return found


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "callback.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# --- item 1: a tariff the rater cannot compute ------------------------------------------------------


def test_an_unpriceable_tariff_published_by_hand_is_refused_and_the_rater_keeps_rating(stack, tmp_path):
    """A rate of 1e400 published straight onto config.tariffs (no loader in between) used to kill
    the rater with InvalidOperation at the first leg it priced, and again after every restart."""
    run = f"ru{uuid.uuid4().hex[:8]}"
    topics = run_topics(run)
    publish_reference(run)
    broken = f"{run}-broken"
    victim = f"{run}-victim"
    raw_tariff = json.dumps(
        {
            "tariff_id": broken,
            "currency": "USD",
            "precision": 4,
            "rates": [{"prefix": "", "destination": "anything", "rate_per_minute": "1e400"}],
        }
    ).encode()
    user = {"user_id": victim, "name": "victim", "tariff_id": broken, "balance": "10"}
    raw_user = json.dumps(user).encode()
    produce(CONFIG_TARIFFS.name, [(broken.encode(), raw_tariff)])
    produce(CONFIG_USERS.name, [(victim.encode(), raw_user)])

    legs = [leg for leg in make_legs(run, 200) if leg.answered_at is not None and leg.billsec_ms > 2000]
    good = legs[:60]
    victims = [
        leg.model_copy(
            update={
                "payer": leg.payer.model_copy(update={"kind": PayerKind.USER, "id": victim}),
                "leg_id": f"{run}-v{i}:b:0",
                "callback_id": f"{run}-v{i}",
            }
        )
        for i, leg in enumerate(legs[60:63])
    ]
    produce(topics["legs"], leg_records(good[:30] + victims[:2] + good[30:]))

    args = rater_args(run, topics, 500)
    rater = CallbackProcess(args, tmp_path / "rater.log").start()
    try:
        rated = lambda: len(committed_keys(topics["cdr"])) >= len(good)  # noqa: E731
        assert wait_until(lambda: rated() or not rater.alive, 90), rater.tail()
        assert rater.alive, rater.tail()
        assert sorted(committed_keys(topics["cdr"])) == sorted(leg.leg_id for leg in good)
        key = f"user:{victim}".encode()  # legs are keyed by payer
        letters = lambda: _dead_letters("dlq.callback.legs", {key}).get(key, [])  # noqa: E731
        assert wait_until(lambda: len(letters()) == 2, 30)
        assert sorted(d.details["leg_id"] for d in letters()) == sorted(leg.leg_id for leg in victims[:2])
        for letter in letters():
            assert letter.error_kind == "no_tariff" and broken in letter.reason, letter
        log = rater.log_text()
        assert "ignoring invalid config.tariffs record" in log and broken in log

        # a restart reloads the same topics and rates on: no crash loop
        assert rater.stop() == 0
        rater.start()
        produce(topics["legs"], leg_records(victims[2:]))
        assert wait_until(lambda: len(letters()) == 3 or not rater.alive, 60)
        assert rater.alive, rater.tail()
        time.sleep(2)
        assert rater.alive, rater.tail()
    finally:
        code = rater.stop()
    assert code == 0, rater.tail()

    # `callback quote` reads the same topic: the tariff is not there, said in one line, no traceback
    result = _cli("quote", "--tariff", broken, "--number", "34911234567", "--seconds", "60")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "InvalidOperation" not in result.stderr
    assert broken in result.stderr


# --- item 2: one CDR ClickHouse refuses -------------------------------------------------------------


def _cdrs(run: str, n: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of ``n`` rated CDRs of this run, as the rater writes them."""
    compiled = {t.tariff_id: CompiledTariff.build(t) for t in tariffs(run)}
    out = []
    at = datetime.now(UTC)
    for leg in make_legs(run, n):
        tariff = compiled[f"{run}-origins" if leg.payer.kind is PayerKind.CALLBACK_USER else f"{run}-retail"]
        q = quote(tariff, leg.dst, leg.billsec_ms, answered=False)
        out.append((leg.leg_id.encode(), cdr_json(from_model(leg), q, version=1, rated_at=at, source="test")))
    return out


def _spoil(value: bytes, **changes: object) -> bytes:
    return json.dumps(json.loads(value) | changes).encode()


def _group_lag(group: str, topic: str) -> int:
    consumer = Consumer(base_config() | {"group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        lag = 0
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        consumer.close()


def test_a_cdr_clickhouse_refuses_goes_to_the_dead_letter_topic_and_the_rest_is_stored(stack, tmp_path):
    """A CDR with q850_cause 70000 (the column is UInt16) used to make the sink retry its whole
    batch for ever: neither it, nor the good CDRs beside it, nor any later CDR was stored."""
    run = f"rs{uuid.uuid4().hex[:8]}"
    topics = run_topics(run, 2, ("cdr",))
    cdrs = _cdrs(run, 60)
    bad = {
        cdrs[5][0]: _spoil(cdrs[5][1], q850_cause=70000),
        cdrs[6][0]: _spoil(cdrs[6][1], started_at="1969-12-31T23:59:59Z"),
        cdrs[7][0]: _spoil(cdrs[7][1], currency="USDX"),
        cdrs[8][0]: _spoil(cdrs[8][1], price="1e400"),
    }
    first = [(k, bad.get(k, v)) for k, v in cdrs[:30]]
    produce(topics["cdr"], first)
    group = f"sink-{run}"
    sink = CallbackProcess(
        ["cdr-sink", "--topic", topics["cdr"], "--group-id", group, "--flush-interval-s", "0.3"],
        tmp_path / "sink.log",
    ).start()
    ch = stack.clickhouse_client()
    stored = f"SELECT count() FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'"
    try:
        time.sleep(2)
        produce(topics["cdr"], cdrs[30:])  # later CDRs are not held up either
        want = len(cdrs) - len(bad)
        assert wait_until(lambda: ch.execute(stored)[0][0] >= want, 60, interval=0.5), (
            f"{ch.execute(stored)[0][0]} of {want} stored\n{sink.tail()}"
        )
        assert ch.execute(stored)[0][0] == want
        rows = {r[0] for r in ch.execute(f"SELECT leg_id FROM callback.cdr WHERE callback_id LIKE '{run}-%'")}
        assert rows == {k.decode() for k, _v in cdrs} - {k.decode() for k in bad}
        assert wait_until(lambda: len(_dead_letters("dlq.cdr.rated", set(bad))) == len(bad), 30)
        letters = _dead_letters("dlq.cdr.rated", set(bad))
        for key, value in bad.items():
            (letter,) = letters[key]
            assert letter.error_kind == "refused_by_clickhouse", letter
            assert letter.reason and letter.source_topic == "cdr.rated"
            assert base64.b64decode(letter.value_b64) == value  # the original bytes
        assert "q850_cause" in letters[cdrs[5][0]][0].reason
        assert wait_until(lambda: _group_lag(group, topics["cdr"]) == 0, 30), "offsets not committed"
        assert sink.alive, sink.tail()
    finally:
        code = sink.stop()
        ch.disconnect()
    assert code == 0, sink.tail()


def test_the_largest_values_the_contract_allows_are_stored_as_they_are(stack):
    """The other side of the bounds: a CDR at every maximum the models allow fits the real table."""
    run = f"rx{uuid.uuid4().hex[:8]}"
    top = RatedCdr(
        source="r",
        leg_id=f"{run}-1:b:65535",
        callback_id=f"{run}-1",
        leg="b",
        attempt=65535,
        version=2**64 - 1,
        src="9" * 20,
        dst="9" * 20,
        did="9" * 20,
        pbx_id="p" * 64,
        started_at="1970-01-01T00:00:00Z",
        answered_at="2106-02-07T06:28:15Z",
        ended_at="2106-02-07T06:28:15Z",
        duration_ms=4_294_967_295_000,
        billsec_ms=0,
        billed_s=MAX_BILLED_S,
        disposition="ANSWERED",
        q850_cause=127,
        sip_code=699,
        payer_kind="callback_user",
        payer_id="u" * 64,
        tariff_id="t" * 64,
        matched_prefix="9" * 20,
        rate_per_minute=RATE_MAX,
        connection_fee=CONNECTION_FEE_MAX,
        increment_s=3600,
        minimal_time_s=3600,
        grace_time_s=3600,
        price=MONEY_MAX,
        currency="ZZZ",
        rated_at="2106-02-07T06:28:15Z",
    )
    from rating_stream.cdr import CDR_COLUMNS

    ch = stack.clickhouse_client()
    table = f"callback.bounds_{run}"
    try:
        ch.execute(f"CREATE TABLE {table} AS callback.cdr")
        row = cdr_row(top.model_dump_json().encode())
        ch.execute(
            f"INSERT INTO {table} ({', '.join(CDR_COLUMNS)}) VALUES",
            [list(col) for col in zip(row, strict=True)],
            columnar=True,
        )
        [back] = ch.execute(
            "SELECT attempt, version, duration, q850_cause, rate_per_minute, connection_fee, price, "
            f"billed_s, toUnixTimestamp(end_time) FROM {table}"
        )
        assert back == (
            65535,
            2**64 - 1,
            4_294_967_295,
            127,
            RATE_MAX,
            CONNECTION_FEE_MAX,
            MONEY_MAX,
            MAX_BILLED_S,
            2**32 - 1,
        )
    finally:
        ch.execute(f"DROP TABLE IF EXISTS {table}")
        ch.disconnect()


# --- item 12: --instance names the static member ----------------------------------------------------


def _members(group: str) -> list[str]:
    admin = AdminClient(base_config())
    described = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return sorted(m.group_instance_id or "" for m in described.members)


def test_two_sinks_with_their_own_instance_names_are_two_static_members(stack, tmp_path):
    """``--instance`` was accepted and ignored: two sinks of one group both joined as
    '<group>-0', and the second fenced the first."""
    run = f"ri{uuid.uuid4().hex[:8]}"
    topics = run_topics(run, 4, ("cdr",))
    group = f"sink-{run}"
    base = ["cdr-sink", "--topic", topics["cdr"], "--group-id", group, "--flush-interval-s", "0.3"]
    a = CallbackProcess([*base, "--instance", "a"], tmp_path / "a.log").start()
    b = CallbackProcess([*base, "--instance", "b"], tmp_path / "b.log").start()
    ch = stack.clickhouse_client()
    try:
        assert wait_until(lambda: _members(group) == [f"{group}-a", f"{group}-b"], 60), (
            _members(group),
            a.tail(),
            b.tail(),
        )
        cdrs = _cdrs(run, 200)
        produce(topics["cdr"], cdrs)
        stored = f"SELECT count() FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'"
        assert wait_until(lambda: ch.execute(stored)[0][0] == len(cdrs), 60, interval=0.5), (
            a.tail(),
            b.tail(),
        )
        time.sleep(3)
        assert a.alive and b.alive, (a.tail(), b.tail())
        assert _members(group) == [f"{group}-a", f"{group}-b"]
    finally:
        codes = a.stop(), b.stop()
        ch.disconnect()
    assert codes == (0, 0), (a.tail(), b.tail())
