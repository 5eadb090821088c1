"""Who pays at which tariff (seed: "Who pays"), the staged ledger, and reference-data folding."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from callback.reference import ReferenceData
from rating_stream.engine import RatingError
from rating_stream.payer import Account, Ledger, payer_terms
from schemas.callback import Payer, PayerKind
from schemas.carrier_config import load_carrier_config
from schemas.rating import BalanceUpdate
from schemas.reference import Tariff, User

CARRIER = Path(__file__).resolve().parents[2] / "examples" / "carrier.yaml"
D = Decimal


@pytest.fixture()
def ref() -> ReferenceData:
    config = load_carrier_config(CARRIER)
    data = ReferenceData()
    for topic, key, value in config.records():
        data.apply(topic, key, value.model_dump_json().encode())
    return data


def test_callback_user_pays_at_the_callback_tariff(ref):
    terms = payer_terms(Payer(kind=PayerKind.CALLBACK_USER, id="cb-owner"), ref)
    assert terms.tariff.tariff_id == "callback-origins"
    assert terms.opening.key == "callback_user:cb-owner"


def test_recognised_user_pays_at_their_tariff(ref):
    terms = payer_terms(Payer(kind=PayerKind.USER, id="alice"), ref)
    assert terms.tariff.tariff_id == "retail-usd"
    assert terms.opening.balance == D("25.00") and terms.opening.key == "user:alice"


def test_card_pays_at_the_cards_tariff(ref):
    terms = payer_terms(Payer(kind=PayerKind.CARD, id="8800100200"), ref)
    assert terms.tariff.tariff_id == "cards-usd" and terms.opening.balance == D("10.00")


@pytest.mark.parametrize(
    ("payer", "kind"),
    [
        (Payer(kind=PayerKind.USER, id="nobody"), "unknown_payer"),
        (Payer(kind=PayerKind.CARD, id="0000000000"), "unknown_payer"),
    ],
)
def test_unknown_payers_are_rating_errors(ref, payer, kind):
    with pytest.raises(RatingError) as err:
        payer_terms(payer, ref)
    assert err.value.kind == kind


def test_missing_tariff_and_currency_mismatch_are_rating_errors(ref):
    ref.apply_model("config.users", "ghost", User(user_id="ghost", name="g", tariff_id="gone"))
    with pytest.raises(RatingError) as err:
        payer_terms(Payer(kind=PayerKind.USER, id="ghost"), ref)
    assert err.value.kind == "no_tariff"
    euro = User(user_id="euro", name="e", tariff_id="retail-usd", currency="EUR")
    ref.apply_model("config.users", "euro", euro)
    with pytest.raises(RatingError) as err:
        payer_terms(Payer(kind=PayerKind.USER, id="euro"), ref)
    assert err.value.kind == "currency_mismatch"


def test_tombstone_removes_and_invalid_record_is_skipped(ref):
    ref.apply("config.tariffs", "cards-usd", None)
    assert "cards-usd" not in ref.tariffs
    ref.apply("config.tariffs", "bad", b'{"tariff_id": "bad", "rates": []}')
    assert "bad" not in ref.tariffs and ref.rejected == 1
    ref.apply(
        "config.tariffs",
        "new",
        Tariff(tariff_id="new", rates=[{"prefix": "1", "rate_per_minute": "1"}]).model_dump_json().encode(),
    )
    assert ref.tariffs["new"].rate_for("1555").prefix == "1"


def _opening(balance: str = "10.00") -> Account:
    return Account("user:u", PayerKind.USER, "u", "USD", D(balance))


def test_batch_debits_are_invisible_until_committed():
    ledger = Ledger()
    batch = ledger.batch()
    batch.debit(_opening(), D("1.25"), "l1")
    after = batch.debit(_opening(), D("0.75"), "l2")
    assert after.balance == D("8.00") and after.sequence == 2
    assert ledger.get("user:u") is None
    [change] = batch.changes()
    assert change.delta == D("-2.00") and change.last_leg_id == "l2"
    batch.commit()
    assert ledger.get("user:u").balance == D("8.00")


def test_an_abandoned_batch_leaves_the_ledger_as_it_was():
    ledger = Ledger()
    b1 = ledger.batch()
    b1.debit(_opening(), D("1"), "l1")
    b1.commit()
    b2 = ledger.batch()
    b2.debit(_opening(), D("5"), "l2")
    del b2  # the transaction aborted
    b3 = ledger.batch()
    assert b3.debit(_opening(), D("1"), "l3").balance == D("8")  # from 9, not from 4


def test_ledger_value_wins_over_configured_opening_balance():
    ledger = Ledger()
    ledger.restore(
        Account.from_update(
            BalanceUpdate(
                source="t",
                payer_kind=PayerKind.USER,
                payer_id="u",
                balance=D("3.00"),
                currency="USD",
                delta=D("-7"),
                sequence=4,
            )
        )
    )
    after = ledger.batch().debit(_opening("10.00"), D("1"), "l")
    assert after.balance == D("2.00") and after.sequence == 5


def test_a_charge_is_never_negative():
    with pytest.raises(ValueError):
        Ledger().batch().debit(_opening(), D("-1"), "l")
