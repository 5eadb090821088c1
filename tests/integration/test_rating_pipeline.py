"""Legs in, CDRs in ClickHouse and balances out, on the real local stack (Kafka + ClickHouse).

The rater and the sink run as real ``callback rating`` / ``callback cdr-sink`` subprocesses. Every
test namespaces its payers, tariffs and callbacks by a fresh run id, so it only looks at its own
rows on the shared topics and tables.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from callback.topic_reader import read_topics
from infra.process import wait_until
from infra.rig import CallbackProcess
from rating_stream.cdr import CDR_COLUMNS
from rating_stream.loadgen import (
    expected_charges,
    expected_prices,
    leg_records,
    make_legs,
    opening_balances,
    produce,
    publish_reference,
)
from rating_stream.rater import read_balances
from schemas.callback import Disposition, FinishedLeg, LegType, Payer, PayerKind, leg_id_for
from schemas.envelope import DeadLetter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(stack, tmp_path_factory) -> Iterator[tuple[CallbackProcess, CallbackProcess]]:
    logs = tmp_path_factory.mktemp("rating-pipeline")
    rater = CallbackProcess(["rating", "--batch-max", "500"], logs / "rater.log").start()
    sink = CallbackProcess(["cdr-sink", "--flush-interval-s", "0.3"], logs / "sink.log").start()
    yield rater, sink
    codes = rater.stop(), sink.stop()
    assert codes == (0, 0), f"unclean exit {codes}\nrater:\n{rater.tail()}\nsink:\n{sink.tail()}"


@pytest.fixture()
def ch(stack):
    client = stack.clickhouse_client()
    yield client
    client.disconnect()


def wait_cdrs(
    ch, run: str, n: int, procs: tuple[CallbackProcess, CallbackProcess], timeout_s: float = 90
) -> None:
    sql = f"SELECT count() FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'"
    ok = wait_until(lambda: ch.execute(sql)[0][0] >= n, timeout_s, interval=0.5)
    got = ch.execute(sql)[0][0]
    assert ok and got == n, f"{got} of {n} CDRs stored\nrater:\n{procs[0].tail()}\nsink:\n{procs[1].tail()}"


def test_legs_in_cdrs_in_clickhouse_and_balances_out(pipeline, ch):
    run = f"rp{uuid.uuid4().hex[:8]}"
    publish_reference(run)
    legs = list(make_legs(run, 600))
    produce("callback.legs", leg_records(legs))
    wait_cdrs(ch, run, len(legs), pipeline)

    expected = expected_prices(run, legs)
    rows = ch.execute(
        f"SELECT leg_id, price, payer_kind, payer_id FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'"
    )
    stored = {leg_id: price for leg_id, price, _k, _i in rows}
    assert stored == {leg_id: price for leg_id, (_key, price) in expected.items()}
    total = ch.execute(f"SELECT sum(price) FROM callback.cdr FINAL WHERE callback_id LIKE '{run}-%'")[0][0]
    assert total == sum(p for _k, p in expected.values()) and total > 0

    charges, count = expected_charges(expected)
    opening = opening_balances(run)
    assert wait_until(lambda: set(charges) <= set(read_balances()), 30)
    balances = read_balances()
    for key, charged in charges.items():
        assert balances[key].balance == opening[key] - charged, key
        assert balances[key].sequence == count[key], key
        assert balances[key].currency == "USD"


def test_cdr_row_carries_every_column(pipeline, ch):
    run = f"rc{uuid.uuid4().hex[:8]}"
    publish_reference(run)
    t0 = datetime(2024, 3, 5, 10, 0, 0, 123_000, tzinfo=UTC)
    leg = FinishedLeg(
        source="test",
        leg_id=leg_id_for(f"{run}-1", LegType.B, 0),
        callback_id=f"{run}-1",
        leg=LegType.B,
        attempt=0,
        pbx_id="pbx1",
        did="2349012345678",
        src="2341234567",
        dst="34612345678",
        started_at=t0,
        answered_at=t0 + timedelta(seconds=4, milliseconds=500),
        ended_at=t0 + timedelta(seconds=35, milliseconds=900),
        disposition=Disposition.ANSWERED,
        q850_cause=16,
        sip_code=200,
        payer=Payer(kind=PayerKind.USER, id=f"{run}-u3"),
        auth_method="device_pin",
        final_state="completed",
    )
    produce("callback.legs", leg_records([leg]))
    wait_cdrs(ch, run, 1, pipeline)
    [row] = ch.execute(
        f"SELECT {', '.join(CDR_COLUMNS[:-2])} FROM callback.cdr FINAL WHERE leg_id = '{leg.leg_id}'"
    )
    naive = t0.replace(tzinfo=None)
    assert row == (
        leg.leg_id,
        f"{run}-1",
        0,
        "b",
        1,
        "2341234567",
        "34612345678",
        "2349012345678",
        "pbx1",
        naive.replace(microsecond=0),
        123,
        naive.replace(second=4, microsecond=0),
        623,
        naive.replace(second=36, microsecond=0),
        23,
        36,
        32,
        35_900,
        31_400,
        60,  # 31.4 s answered -> 32 s -> Spain Mobile 30/30 -> 60 s
        "ANSWERED",
        16,
        200,
        "user",
        f"{run}-u3",
        f"{run}-retail",
        "346",
        "Spain Mobile",
        Decimal("0.12"),
        Decimal("0.01"),
        30,
        30,
        0,
        Decimal("0.13"),
        "USD",
        "device_pin",
        "completed",
    )


def _dead_letters(since_keys: set[bytes]) -> dict[bytes, DeadLetter]:
    found: dict[bytes, DeadLetter] = {}

    def on(msg):
        if msg.key() in since_keys:
            found[msg.key()] = DeadLetter.model_validate_json(msg.value())

    read_topics("dlq-reader", ["dlq.callback.legs"], on)
    return found


def test_unratable_legs_go_to_the_dead_letter_topic_with_the_reason(pipeline, ch):
    run = f"rd{uuid.uuid4().hex[:8]}"
    publish_reference(run)
    good = list(make_legs(run, 40))
    answered = next(leg for leg in good if leg.answered_at is not None and leg.leg is LegType.A)
    unknown_payer = answered.model_copy(
        update={
            "payer": Payer(kind=PayerKind.USER, id=f"{run}-nobody"),
            "leg_id": f"{run}-x:a:0",
            "callback_id": f"{run}-x",
        }
    )
    no_prefix = answered.model_copy(
        update={
            "dst": "999123",
            "leg_id": f"{run}-y:a:0",
            "callback_id": f"{run}-y",
            "payer": Payer(kind=PayerKind.USER, id=f"{run}-u1"),
        }
    )
    newer = json.loads(answered.model_dump_json()) | {"schema_version": 99, "leg_id": f"{run}-z:a:0"}
    bad = {
        f"{run}-bad-json".encode(): (b"{not json", "malformed_json"),
        f"{run}-bad-schema".encode(): (b'{"type": "callback.leg", "leg_id": 5}', "invalid_schema"),
        f"{run}-newer".encode(): (json.dumps(newer).encode(), "unknown_schema_version"),
        f"{run}-x".encode(): (unknown_payer.model_dump_json().encode(), "unknown_payer"),
        f"{run}-y".encode(): (no_prefix.model_dump_json().encode(), "no_prefix"),
    }
    produce("callback.legs", [(k, v) for k, (v, _kind) in bad.items()] + list(leg_records(good)))
    wait_cdrs(ch, run, len(good), pipeline)  # the good legs around them were rated regardless
    assert wait_until(lambda: len(_dead_letters(set(bad))) == len(bad), 30)
    letters = _dead_letters(set(bad))
    for key, (value, kind) in bad.items():
        letter = letters[key]
        assert letter.error_kind == kind, (key, letter.reason)
        assert letter.reason and letter.source_topic == "callback.legs"
        assert base64.b64decode(letter.value_b64) == value  # the original bytes, for a replay
    assert pipeline[0].alive and pipeline[1].alive


def test_a_redelivered_leg_is_charged_once(pipeline, ch):
    run = f"rr{uuid.uuid4().hex[:8]}"
    publish_reference(run)
    legs = [leg for leg in make_legs(run, 60)]
    charged = next(
        leg
        for leg in legs
        if leg.payer.kind is PayerKind.USER and leg.answered_at is not None and leg.billsec_ms > 10_000
    )
    again = charged.model_copy(update={"event_id": uuid.uuid4().hex})  # same leg id, new delivery
    produce("callback.legs", leg_records(legs))
    wait_cdrs(ch, run, len(legs), pipeline)
    produce("callback.legs", leg_records([again]))
    before = read_balances()[charged.payer.key]
    time.sleep(3)  # give the rater time to see (and drop) the redelivery
    after = read_balances()[charged.payer.key]
    assert after.balance == before.balance and after.sequence == before.sequence
    assert ch.execute(f"SELECT count() FROM callback.cdr WHERE leg_id = '{charged.leg_id}'")[0][0] == 1


def test_a_leg_first_published_before_the_raters_memory_goes_to_review_not_to_a_charge(pipeline, ch):
    """A processors worker back from a long outage re-publishes its last legs byte for byte, their
    envelope time that of their first publication: older than the rater's memory of charged legs
    (6 h), such a leg may have been charged already, so it is dead-lettered for review, uncharged;
    the same leg published now is charged."""
    run = f"rh{uuid.uuid4().hex[:8]}"
    publish_reference(run)
    leg = next(
        leg
        for leg in make_legs(run, 60)
        if leg.payer.kind is PayerKind.USER and leg.answered_at is not None and leg.billsec_ms > 10_000
    )
    old = leg.model_copy(update={"time": datetime.now(UTC) - timedelta(hours=7)})
    fresh = leg.model_copy(update={"leg_id": f"{leg.leg_id}-fresh", "callback_id": f"{run}-fresh"})
    produce("callback.legs", leg_records([old, fresh]))
    wait_cdrs(ch, run, 1, pipeline)
    assert wait_until(lambda: old.payer.key.encode() in _dead_letters({old.payer.key.encode()}), 30)
    letter = _dead_letters({old.payer.key.encode()})[old.payer.key.encode()]
    assert letter.error_kind == "beyond_dedupe_horizon" and letter.details["leg_id"] == old.leg_id
    assert ch.execute(f"SELECT count() FROM callback.cdr WHERE leg_id = '{old.leg_id}'")[0][0] == 0
    assert ch.execute(f"SELECT count() FROM callback.cdr WHERE leg_id = '{fresh.leg_id}'")[0][0] == 1
    assert read_balances()[leg.payer.key].sequence == 1  # the fresh leg only


def test_sink_rides_out_a_clickhouse_outage(pipeline, ch, stack):
    """Stop the stack's ClickHouse, feed legs, start it again: every CDR arrives, none twice."""
    from infra import stack as local_stack

    run = f"ro{uuid.uuid4().hex[:8]}"
    publish_reference(run)
    legs = list(make_legs(run, 300))
    local_stack.layout().clickhouse_process().stop()
    try:
        produce("callback.legs", leg_records(legs))
        sink_log = pipeline[1].log_path
        assert wait_until(lambda: "retrying in" in sink_log.read_text(), 30), pipeline[1].tail()
    finally:
        local_stack.up(provision=False)
    ch.disconnect()
    wait_cdrs(ch, run, len(legs), pipeline)
    assert ch.execute(f"SELECT count() FROM callback.cdr WHERE callback_id LIKE '{run}-%'")[0][0] == len(legs)
    assert pipeline[1].alive
