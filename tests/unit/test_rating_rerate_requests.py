"""``cdr.rerates``: the rater applies a re-priced leg (its CDR, and the balance moved by the new
price minus the previous one) once per version, whoever published it how many times."""

from __future__ import annotations

from decimal import Decimal

from rating_stream.batch import RatingBatch, RecentLegs
from rating_stream.loadgen import make_legs
from rating_stream.payer import Ledger
from schemas.rating import LedgerEntry, LedgerEntryKind, RatedCdr, RerateRequest
from tests.unit.test_rating_ledger import AT, RUN, _rate, _ref


def _charged_cdr(ledger: Ledger) -> RatedCdr:
    """A leg rated and committed, priced above zero: what a re-rate corrects."""
    for leg in make_legs(RUN, 50):
        batch, result = _rate(ledger, [leg])
        batch.commit(0.0)
        cdr = RatedCdr.model_validate_json(result.cdrs[0][1])
        if cdr.price > 0:
            return cdr
    raise AssertionError("no leg of the run is charged")


def _request(
    cdr: RatedCdr, new_price: Decimal, version: int | None = None, previous: Decimal | None = None
) -> bytes:
    new = cdr.model_copy(update={"price": new_price, "version": version or cdr.version + 1})
    was = cdr.price if previous is None else previous
    return RerateRequest(source="t", previous_price=was, cdr=new).model_dump_json().encode()


def _batch(ledger: Ledger, rerated: dict[str, int]) -> RatingBatch:
    return RatingBatch(_ref(), ledger, RecentLegs(3600.0), source="t", rated_at=AT, rerated=rerated)


def test_a_rerate_moves_the_balance_by_the_difference_and_publishes_its_cdr():
    ledger, rerated = Ledger(), {}
    cdr = _charged_cdr(ledger)
    key = cdr.payer.key
    before = ledger.get(key).balance
    batch = _batch(ledger, rerated)
    batch.add_rerate(0, _request(cdr, cdr.price + Decimal("0.25")))
    result = batch.finish()
    assert result.rejected == []
    [(cdr_key, value)] = result.cdrs
    assert cdr_key == cdr.leg_id.encode()
    assert RatedCdr.model_validate_json(value).version == cdr.version + 1
    [(_k, entry_json)] = result.ledger
    entry = LedgerEntry.model_validate_json(entry_json)
    assert (entry.kind, entry.amount, entry.cdr_version) == (LedgerEntryKind.ADJUSTMENT, Decimal("-0.25"), 2)
    batch.commit(1.0)
    assert ledger.get(key).balance == before - Decimal("0.25")
    assert rerated == {cdr.leg_id: cdr.version + 1}


def test_a_version_already_applied_is_dropped_and_a_newer_one_is_not():
    ledger, rerated = Ledger(), {}
    cdr = _charged_cdr(ledger)
    key = cdr.payer.key
    first = _batch(ledger, rerated)
    first.add_rerate(0, _request(cdr, Decimal(0)))
    first.add_rerate(1, _request(cdr, Decimal(0)))  # the same run published twice, one batch
    assert len(first.finish().cdrs) == 1 and first.result.duplicates == 1
    first.commit(1.0)
    refunded = ledger.get(key).balance
    again = _batch(ledger, rerated)  # a later batch: known from the committed versions
    again.add_rerate(0, _request(cdr, Decimal(0)))
    assert again.finish().cdrs == [] and again.result.duplicates == 1
    newer = _batch(ledger, rerated)
    # a later tariff change puts the price back up
    newer.add_rerate(0, _request(cdr, cdr.price, version=3, previous=Decimal(0)))
    assert len(newer.finish().cdrs) == 1
    newer.commit(2.0)
    assert ledger.get(key).balance == refunded - cdr.price


def test_an_uncommitted_rerate_is_forgotten():
    ledger, rerated = Ledger(), {}
    cdr = _charged_cdr(ledger)
    batch = _batch(ledger, rerated)
    batch.add_rerate(0, _request(cdr, Decimal(0)))
    batch.finish()  # the transaction aborted: no commit
    assert rerated == {}
    retry = _batch(ledger, rerated)
    retry.add_rerate(0, _request(cdr, Decimal(0)))
    assert len(retry.finish().cdrs) == 1


def test_a_broken_or_unknown_payer_rerate_is_rejected_and_the_rest_applied():
    ledger, rerated = Ledger(), {}
    cdr = _charged_cdr(ledger)
    ghost = cdr.model_copy(update={"payer_id": "nobody", "version": 2})
    batch = _batch(ledger, rerated)
    batch.add_rerate(0, b'{"type": "cdr.rerate"')
    unknown = RerateRequest(source="t", previous_price=cdr.price, cdr=ghost)
    batch.add_rerate(1, unknown.model_dump_json().encode())
    batch.add_rerate(2, _request(cdr, Decimal(0)))
    result = batch.finish()
    assert [(i, r.error_kind) for i, r in result.rejected] == [(0, "malformed_json"), (1, "unknown_payer")]
    assert [k for k, _v in result.cdrs] == [cdr.leg_id.encode()]
