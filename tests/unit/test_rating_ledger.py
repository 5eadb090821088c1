"""``accounts.ledger``: one entry per charged leg, in order per payer, that adds up to the balances
(issue: "accounts.balances cannot be read as a ledger")."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from callback.reference import ReferenceData
from rating_stream.batch import RatingBatch, RecentLegs
from rating_stream.loadgen import make_legs, opening_balances, reference_records
from rating_stream.payer import Ledger, ledger_event_id
from schemas.rating import BalanceUpdate, LedgerEntry, RatedCdr

RUN = "ledger"


def _ref() -> ReferenceData:
    ref = ReferenceData()
    for topic, key, value in reference_records(RUN):
        ref.apply(topic, key.decode(), value)
    return ref


AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _rate(ledger: Ledger, legs) -> tuple[RatingBatch, object]:
    batch = RatingBatch(_ref(), ledger, RecentLegs(3600.0 * 24 * 365), source="t", rated_at=AT)
    for i, leg in enumerate(legs):
        batch.add(i, leg.model_dump_json().encode())
    return batch, batch.finish()


def test_every_charged_leg_has_one_entry_and_they_add_up_to_the_balances():
    ledger = Ledger()
    legs = list(make_legs(RUN, 600))
    history: dict[str, list[LedgerEntry]] = defaultdict(list)
    balances: dict[str, BalanceUpdate] = {}
    prices: dict[str, Decimal] = {}
    for chunk in (legs[:250], legs[250:]):  # two transactions
        batch, result = _rate(ledger, chunk)
        for key, value in result.ledger:
            entry = LedgerEntry.model_validate_json(value)  # the contract, as a consumer reads it
            assert entry.model_dump_json().encode() == value  # written as the model itself writes it
            assert key.decode() == f"{entry.payer_kind.value}:{entry.payer_id}"
            history[key.decode()].append(entry)
        for key, value in result.balances:
            balances[key.decode()] = BalanceUpdate.model_validate_json(value)
        for _key, value in result.cdrs:
            cdr = RatedCdr.model_validate_json(value)
            prices[cdr.leg_id] = cdr.price
        batch.commit(0.0)
    charged = {leg_id for leg_id, price in prices.items() if price > 0}
    assert charged and {e.leg_id for entries in history.values() for e in entries} == charged
    assert sum(len(entries) for entries in history.values()) == len(charged)
    opening = opening_balances(RUN)
    for payer, entries in history.items():
        balance = opening[payer]
        for n, entry in enumerate(entries, start=1):
            assert entry.amount == -prices[entry.leg_id] and entry.kind == "charge"
            balance += entry.amount
            assert entry.balance == balance and entry.sequence == n
            assert entry.event_id == ledger_event_id(payer, entry.leg_id, 1)
        final = balances[payer]
        assert (final.balance, final.sequence, final.leg_id) == (balance, len(entries), entries[-1].leg_id)


def test_an_aborted_transaction_leaves_no_entries_behind():
    """A batch rated but never committed (its transaction aborted) changes nothing: rated again,
    it yields the same entries, and once committed each payer's sequence counts each charge once."""
    ledger = Ledger()
    legs = list(make_legs(RUN, 50))
    _aborted, first = _rate(ledger, legs)  # never committed
    batch, again = _rate(ledger, legs)
    assert again.ledger == first.ledger and again.ledger
    batch.commit(0.0)
    charges: dict[str, int] = defaultdict(int)
    for key, _value in again.ledger:
        charges[key.decode()] += 1
    assert {key: ledger.get(key).sequence for key in charges} == dict(charges)


def test_ledger_event_ids_are_deterministic_and_bounded():
    assert ledger_event_id("user:1", "cb:a:0", 1) == ledger_event_id("user:1", "cb:a:0", 1)
    assert ledger_event_id("user:1", "cb:a:0", 1) != ledger_event_id("user:1", "cb:a:0", 2)
    assert len(ledger_event_id("card:" + "9" * 20, "x" * 160, 3)) <= 128
