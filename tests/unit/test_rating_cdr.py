"""The rater's fast CDR encoder honours the ``cdr.rated`` contract, and the sink's row decoder
fills every ClickHouse column from it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import orjson
import pytest

from callback.reference import ReferenceData
from rating_stream.batch import RatingBatch, RecentLegs
from rating_stream.cdr import CDR_COLUMNS, LEG_COLUMNS, cdr_event_id, cdr_json, cdr_row, rated_cdr
from rating_stream.engine import quote
from rating_stream.loadgen import make_legs, reference_records
from rating_stream.payer import Ledger
from rating_stream.wire import from_model
from schemas.callback import FinishedLeg
from schemas.rating import RatedCdr

RUN = "unit"


@pytest.fixture(scope="module")
def ref() -> ReferenceData:
    data = ReferenceData()
    for topic, key, value in reference_records(RUN):
        data.apply(topic, key.decode(), value)
    return data


def _legs(n: int = 300) -> list[FinishedLeg]:
    return list(make_legs(RUN, n, seed=3))


def test_fast_cdr_equals_the_pydantic_model(ref):
    at = datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    for leg in _legs():
        tariff = ref.tariffs[(ref.users.get(leg.payer.id) or ref.cards[leg.payer.id]).tariff_id]
        q = quote(tariff, leg.dst, leg.billsec_ms, leg.answered_at is not None)
        fast = RatedCdr.model_validate_json(cdr_json(from_model(leg), q, version=3, rated_at=at, source="r"))
        slow = rated_cdr(leg, q, version=3, rated_at=at, source="r")
        assert fast.model_dump(exclude={"event_id", "time"}) == slow.model_dump(exclude={"event_id", "time"})
        assert fast.event_id == f"cdr:{leg.leg_id}:3" and fast.time == at


def test_event_id_is_deterministic_and_bounded():
    assert cdr_event_id("x", 1) == cdr_event_id("x", 1) != cdr_event_id("x", 2)
    assert len(cdr_event_id("y" * 160, 1)) <= 128


def test_row_fills_every_column_in_order(ref):
    at = datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    batch = RatingBatch(ref, Ledger(), RecentLegs(60), source="r", rated_at=at)
    legs = [leg for leg in _legs() if leg.answered_at is not None][:5]
    for i, leg in enumerate(legs):
        batch.add(i, leg.model_dump_json().encode())
    for (_key, value), leg in zip(batch.finish().cdrs, legs, strict=True):
        row = dict(zip(CDR_COLUMNS, cdr_row(value), strict=True))
        assert row["leg_id"] == leg.leg_id and row["version"] == 1
        assert row["start_time"] == int(leg.started_at.timestamp())
        assert row["start_ms"] == leg.started_at.microsecond // 1000
        answered = leg.answered_at or leg.started_at
        assert row["answer_time"] == int(answered.timestamp())
        assert row["billsec_ms"] == leg.billsec_ms and row["billsec"] == -(-leg.billsec_ms // 1000)
        assert row["rated_at"] == int(at.timestamp()) and row["rated_ms"] == 678
        assert Decimal(row["price"]) == Decimal(orjson.loads(value)["price"])  # money as its text


def test_leg_columns_are_the_legs_part_of_the_cdr_row(ref):
    """The rating bench's unrated row (``leg_row``, ``LEG_COLUMNS``) holds what the sink's CDR row
    holds in those columns: the two positional row builders agree with the one column list."""
    from rating_stream.bench import RAW_COLUMNS, leg_row

    assert RAW_COLUMNS == LEG_COLUMNS == tuple(c for c in CDR_COLUMNS if c in LEG_COLUMNS)
    batch = RatingBatch(ref, Ledger(), RecentLegs(60), source="r", rated_at=datetime.now(UTC))
    legs = _legs(40)
    for i, leg in enumerate(legs):
        batch.add(i, leg.model_dump_json().encode())
    cdrs = batch.finish().cdrs
    assert len(cdrs) == len(legs)
    for (_key, value), leg in zip(cdrs, legs, strict=True):
        rated = dict(zip(CDR_COLUMNS, cdr_row(value), strict=True))
        raw = dict(zip(LEG_COLUMNS, leg_row(leg.model_dump_json().encode()), strict=True))
        assert raw == {column: rated[column] for column in LEG_COLUMNS}


def test_row_of_a_cdr_rated_before_destinations_has_an_empty_one(ref):
    """CDRs on ``cdr.rated`` from before the rater wrote ``destination`` still load (as '')."""
    leg = next(leg for leg in _legs() if leg.leg == "b")
    batch = RatingBatch(ref, Ledger(), RecentLegs(60), source="r", rated_at=datetime.now(UTC))
    batch.add(0, leg.model_dump_json().encode())
    [(_key, value)] = batch.finish().cdrs
    record = orjson.loads(value)
    assert dict(zip(CDR_COLUMNS, cdr_row(orjson.dumps(record)), strict=True))["destination"] != ""
    del record["destination"]
    assert dict(zip(CDR_COLUMNS, cdr_row(orjson.dumps(record)), strict=True))["destination"] == ""


def test_unanswered_row_has_null_answer_time(ref):
    leg = next(leg for leg in _legs() if leg.answered_at is None)
    batch = RatingBatch(ref, Ledger(), RecentLegs(60), source="r", rated_at=datetime.now(UTC))
    batch.add(0, leg.model_dump_json().encode())
    [(_key, value)] = batch.finish().cdrs
    row = dict(zip(CDR_COLUMNS, cdr_row(value), strict=True))
    assert row["answer_time"] is None and row["answer_ms"] == 0 and Decimal(row["price"]) == 0


def test_batch_rejects_and_duplicates(ref):
    leg = next(leg for leg in _legs() if leg.answered_at is not None)
    recent = RecentLegs(60)
    batch = RatingBatch(ref, Ledger(), recent, source="r", rated_at=datetime.now(UTC))
    batch.add(0, b"")
    batch.add(1, b"{oops")
    batch.add(2, b'{"type": "callback.leg"}')
    batch.add(3, leg.model_dump_json().encode())
    batch.add(4, leg.model_copy(update={"event_id": "again"}).model_dump_json().encode())
    result = batch.finish()
    assert [(i, r.error_kind) for i, r in result.rejected] == [
        (0, "malformed_json"),
        (1, "malformed_json"),
        (2, "invalid_schema"),
    ]
    assert len(result.cdrs) == 1 and result.duplicates == 1
    assert leg.leg_id not in recent  # not before the transaction commits
    batch.commit(now=1000.0)
    assert leg.leg_id in recent
    recent.expire(now=1000.0 + 61)
    assert leg.leg_id not in recent


def test_a_reference_miss_catches_up_once_per_batch_then_rates(ref):
    late = ReferenceData()  # the rater has not fetched this run's reference data yet
    leg = next(leg for leg in _legs() if leg.answered_at is not None)
    calls = []

    def refresh():
        calls.append(1)
        for topic, key, value in reference_records(RUN):
            late.apply(topic, key.decode(), value)

    batch = RatingBatch(
        late, Ledger(), RecentLegs(60), source="r", rated_at=datetime.now(UTC), refresh=refresh
    )
    batch.add(0, leg.model_dump_json().encode())
    ghost = leg.model_copy(
        update={"leg_id": "ghost:a:0", "payer": leg.payer.model_copy(update={"id": "ghost"})}
    )
    batch.add(1, ghost.model_dump_json().encode())
    result = batch.finish()
    assert len(result.cdrs) == 1 and calls == [1]
    assert [(i, r.error_kind) for i, r in result.rejected] == [(1, "unknown_payer")]


@pytest.mark.parametrize(
    "change, kind",
    [
        ({"price": 0.31}, "ValidationError"),
        ({"started_at": "2026-11-30T12:00:00"}, "ValidationError"),
        ({"leg": 7}, "ValidationError"),
        ({"leg_id": None}, "ValidationError"),
        ({"billed_s": "60"}, "ValidationError"),
    ],
)
def test_a_record_that_is_not_a_cdr_is_refused_with_its_reason(ref, change, kind):
    """What the sink dead-letters: ``cdr_row`` raises for it instead of building a bad row. (Text
    that is no enumeration value or no number reaches ClickHouse, which refuses the row: the sink
    splits the insert and dead-letters it, tests/integration/test_rating_refusals.py.)"""
    leg = next(iter(_legs()))
    batch = RatingBatch(ref, Ledger(), RecentLegs(60), source="r", rated_at=datetime.now(UTC))
    batch.add(0, leg.model_dump_json().encode())
    [(_key, value)] = batch.finish().cdrs
    with pytest.raises(msgspec.MsgspecError) as caught:
        cdr_row(orjson.dumps({**orjson.loads(value), **change}))
    assert type(caught.value).__name__ == kind
    with pytest.raises(msgspec.DecodeError):
        cdr_row(b"{not json")
