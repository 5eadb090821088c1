"""Money and rate bounds (issue item 1): what the rater cannot price is refused where it enters, and
what still reaches the rater is dead-lettered, never a crash.

A tariff rate of ``1e400`` used to pass ``callback config load`` and then kill ``callback quote`` and
the rater (on every restart) with ``decimal.InvalidOperation``; ``"99999999999999999999999999"`` and a
balance of ``"1e30"`` passed too, though the ``cdr`` table stores money as ``Decimal(18, 8)``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from callback.cli import app
from callback.reference import ReferenceData
from rating_stream.batch import RatingBatch, RecentLegs
from rating_stream.engine import CompiledTariff, RatingError, quote
from rating_stream.loadgen import make_legs, reference_records
from rating_stream.payer import Account, Ledger
from schemas.callback import Disposition, FinishedLeg, LegType, Payer, PayerKind
from schemas.carrier_config import ConfigError, load_carrier_config
from schemas.envelope import MONEY_MAX
from schemas.rating import BalanceUpdate, RatedCdr
from schemas.reference import (
    CONNECTION_FEE_MAX,
    MAX_BILLED_S,
    RATE_MAX,
    CallingCard,
    Rate,
    Tariff,
    User,
)
from schemas.topics import CONFIG_TARIFFS
from tests.factories import SAMPLE_CARRIER, broken_carrier, line_of

SAMPLE = SAMPLE_CARRIER
RUN = "bounds"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)






# --- the loader refuses what the rater cannot compute, with the file and line --------------------

@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('rate_per_minute: "0.08"', "rate_per_minute: 1e400", "rate_per_minute"),
        ('rate_per_minute: "0.08"', 'rate_per_minute: "1e400"', "rate_per_minute"),
        ('rate_per_minute: "0.08"', 'rate_per_minute: "99999999999999999999999999"', "rate_per_minute"),
        ('rate_per_minute: "0.08"', 'rate_per_minute: "100000.00000001"', "rate_per_minute"),
        ('connection_fee: "0.01"', 'connection_fee: "1e11"', "connection_fee"),
        ('balance: "25.00"', 'balance: "1e30"', "balance"),
        ('balance: "25.00"', 'balance: "-10000000000"', "balance"),
        ('balance: "25.00"', 'balance: "0.000000001"', "balance"),
        ('credit_limit: "200.00"', 'credit_limit: "1e12"', "credit_limit"),
        ('balance: "10.00"}', 'balance: "1e30"}', "balance"),  # a calling card
    ],
)
def test_loader_refuses_money_beyond_the_cdr_store_with_its_line(tmp_path, old, new, field):
    path = broken_carrier(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    assert problem.path.endswith(field), problem
    assert problem.line == line_of(path, new.split(":")[-1].strip().rstrip("}")), problem
    assert f"broken.yaml:{problem.line}:" in str(info.value)


def test_the_largest_values_allowed_still_load(tmp_path):
    path = broken_carrier(tmp_path, 'rate_per_minute: "0.08"', f'rate_per_minute: "{RATE_MAX}"')
    path.write_text(path.read_text().replace('balance: "25.00"', f'balance: "{MONEY_MAX}"', 1))
    config = load_carrier_config(path)
    assert any(r.rate_per_minute == RATE_MAX for t in config.tariffs for r in t.rates)


def test_config_load_cli_refuses_an_unpriceable_rate_with_the_line(tmp_path):
    path = broken_carrier(tmp_path, 'rate_per_minute: "0.08"', "rate_per_minute: 1e400")
    result = CliRunner().invoke(app, ["config", "load", str(path), "--dry-run"])
    assert result.exit_code == 1, result.output
    assert f"broken.yaml:{line_of(path, '1e400')}:" in result.output
    assert "rate_per_minute" in result.output


def test_quote_refuses_a_file_with_an_unpriceable_rate_instead_of_crashing(tmp_path):
    path = broken_carrier(tmp_path, 'rate_per_minute: "0.08"', "rate_per_minute: 1e400")
    result = CliRunner().invoke(
        app, ["quote", "--tariff", "retail-usd", "--number", "34911234567", "--seconds", "60",
              "--config", str(path)]
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert f"broken.yaml:{line_of(path, '1e400')}:" in result.output


# --- the bounds are consistent: the longest leg at the highest terms fits the store ----------------

def test_longest_billable_leg_at_the_highest_rate_fits_decimal_18_8():
    worst = RATE_MAX * MAX_BILLED_S / 60 + CONNECTION_FEE_MAX
    assert worst <= MONEY_MAX
    tariff = CompiledTariff.build(
        Tariff(
            tariff_id="max",
            precision=8,
            rates=[
                Rate(prefix="", rate_per_minute=RATE_MAX, connection_fee=CONNECTION_FEE_MAX, increment_s=1)
            ],
        )
    )
    q = quote(tariff, "1", MAX_BILLED_S * 1000)
    assert q.billed_s == MAX_BILLED_S and q.price == worst
    BalanceUpdate(
        source="t", payer_kind="user", payer_id="u", balance=-q.price, currency="USD", delta=-q.price,
        sequence=1,
    )


def test_a_leg_billed_beyond_the_limit_is_unpriceable_not_a_crash():
    tariff = CompiledTariff.build(
        Tariff(tariff_id="t", rates=[Rate(prefix="", rate_per_minute=Decimal("0.01"), increment_s=60)])
    )
    assert quote(tariff, "1", MAX_BILLED_S * 1000).billed_s == MAX_BILLED_S
    with pytest.raises(RatingError) as info:
        quote(tariff, "1", MAX_BILLED_S * 1000 + 1)
    assert info.value.kind == "unpriceable" and "604800" in info.value.reason


@pytest.mark.parametrize(
    "value", ["1e400", "1e30", "99999999999999999999999999", "10000000000", "0.000000001"]
)
def test_money_fields_refuse_what_decimal_18_8_cannot_hold(value):
    with pytest.raises(ValidationError):
        User(user_id="u", name="u", tariff_id="t", balance=value)
    with pytest.raises(ValidationError):
        CallingCard(number="1234", pin="1234", tariff_id="t", balance=value)
    with pytest.raises(ValidationError):
        Rate(prefix="1", rate_per_minute=value)
    with pytest.raises(ValidationError):
        BalanceUpdate(source="t", payer_kind="user", payer_id="u", balance=value, currency="USD",
                      delta="0", sequence=0)


# --- the reference fold rejects an invalid tariff published by hand -------------------------------

def _raw_tariff(tariff_id: str, rate: str) -> bytes:
    record = {"tariff_id": tariff_id, "currency": "USD", "precision": 4,
              "rates": [{"prefix": "34", "rate_per_minute": rate}]}
    return json.dumps(record).encode()


def test_fold_rejects_a_hand_published_unpriceable_tariff_and_keeps_the_previous(caplog):
    ref = ReferenceData()
    ref.apply(CONFIG_TARIFFS.name, "t", _raw_tariff("t", "0.08"))
    with caplog.at_level(logging.ERROR):
        ref.apply(CONFIG_TARIFFS.name, "t", _raw_tariff("t", "1e400"))
        ref.apply(CONFIG_TARIFFS.name, "u", _raw_tariff("u", "99999999999999999999999999"))
    assert ref.rejected == 2
    assert ref.tariffs["t"].tariff.rates[0].rate_per_minute == Decimal("0.08")
    assert "u" not in ref.tariffs
    assert "config.tariffs" in caplog.text and "'t'" in caplog.text


# --- the rater dead-letters what it still cannot price, and the batch goes on ---------------------

@pytest.fixture()
def ref() -> ReferenceData:
    data = ReferenceData()
    for topic, key, value in reference_records(RUN):
        data.apply(topic, key.decode(), value)
    return data


def _answered_legs(n: int = 20) -> list[FinishedLeg]:
    legs = make_legs(RUN, 200, seed=3)
    return [leg for leg in legs if leg.answered_at is not None and leg.billsec_ms > 5000][:n]


def _smuggle(ref: ReferenceData, tariff_id: str, **rate: object) -> None:
    """A tariff that skipped validation (an older version's fold, a test double): what the rater must
    survive even though no validated record can look like it."""
    terms = dict(prefix="", destination="", rate_per_minute=Decimal("0.1"), connection_fee=Decimal(0),
                 increment_s=1, minimal_time_s=0, grace_time_s=0) | rate
    bad = Tariff.model_construct(
        tariff_id=tariff_id, name="", currency="USD", precision=4, rates=[Rate.model_construct(**terms)]
    )
    ref.tariffs[tariff_id] = CompiledTariff.build(bad)


@pytest.mark.parametrize(
    "rate",
    [
        {"rate_per_minute": Decimal("1e400")},  # quantize: InvalidOperation
        {"rate_per_minute": Decimal("9e999999")},  # multiply: Overflow
        {"rate_per_minute": Decimal("99999999999999999999999999")},  # fits Decimal, not the store
        {"connection_fee": Decimal("1e30")},
    ],
)
def test_an_unpriceable_rate_dead_letters_its_leg_and_the_batch_goes_on(ref, rate, caplog):
    legs = _answered_legs()
    victim = legs[3]
    user = ref.users.get(victim.payer.id) if victim.payer.kind is not PayerKind.CARD else None
    if user is None:
        victim = next(leg for leg in legs if leg.payer.kind is PayerKind.USER)
        user = ref.users[victim.payer.id]
    _smuggle(ref, "broken", **rate)
    ref.users[user.user_id] = user.model_copy(update={"tariff_id": "broken"})
    batch = RatingBatch(ref, Ledger(), RecentLegs(3600), source="r", rated_at=datetime.now(UTC))
    with caplog.at_level(logging.WARNING):
        for i, leg in enumerate(legs):
            batch.add(i, leg.model_dump_json().encode())
        result = batch.finish()
    victims = {i for i, leg in enumerate(legs) if leg.payer == victim.payer}
    assert {i for i, _ in result.rejected} == victims
    for _i, why in result.rejected:
        assert why.error_kind == "unpriceable", why
        assert "broken" in why.reason and why.leg_id
    assert len(result.cdrs) == len(legs) - len(victims)
    for _key, value in result.cdrs:
        RatedCdr.model_validate_json(value)


def test_a_charge_that_would_take_a_balance_beyond_the_store_is_dead_lettered(ref):
    legs = [leg for leg in _answered_legs(40) if leg.payer.kind is PayerKind.USER]
    payer = legs[0].payer
    mine = [leg for leg in legs if leg.payer == payer]
    almost_bottom = -MONEY_MAX + Decimal("0.0001")
    ledger = Ledger({payer.key: Account(payer.key, payer.kind, payer.id, "USD", almost_bottom)})
    batch = RatingBatch(ref, ledger, RecentLegs(3600), source="r", rated_at=datetime.now(UTC))
    for i, leg in enumerate(legs):
        batch.add(i, leg.model_dump_json().encode())
    result = batch.finish()
    rejected = {legs[i].leg_id: why for i, why in result.rejected}
    charged = [leg for leg in mine if leg.leg_id not in rejected]
    assert rejected and all(why.error_kind == "balance_out_of_range" for why in rejected.values())
    assert all(leg.payer == payer for leg in legs if leg.leg_id in rejected)
    assert len(result.cdrs) == len(legs) - len(rejected)
    for key, value in result.balances:  # every balance still a valid record
        update = BalanceUpdate.model_validate_json(value)
        assert abs(update.balance) <= MONEY_MAX, key
    assert len(charged) + len(rejected) == len(mine)


def test_a_leg_answered_longer_than_the_billable_limit_goes_to_review(ref):
    leg = _answered_legs(1)[0]
    long = leg.model_copy(update={"ended_at": leg.answered_at + timedelta(seconds=MAX_BILLED_S + 61)})
    batch = RatingBatch(ref, Ledger(), RecentLegs(3600), source="r", rated_at=datetime.now(UTC))
    batch.add(0, long.model_dump_json().encode())
    batch.add(1, leg.model_copy(update={"leg_id": "ok:a:0"}).model_dump_json().encode())
    result = batch.finish()
    assert [(i, why.error_kind) for i, why in result.rejected] == [(0, "unpriceable")]
    assert len(result.cdrs) == 1


def test_finished_leg_refuses_what_the_cdr_columns_cannot_store():
    base = dict(
        source="t", leg_id="cb:a:0", callback_id="cb", leg=LegType.A, dst="34911234567", started_at=T0,
        answered_at=None, ended_at=T0 + timedelta(seconds=3), disposition=Disposition.NO_ANSWER,
        payer=Payer(kind=PayerKind.USER, id="u"),
    )
    FinishedLeg(**base, q850_cause=127, sip_code=699, attempt=65535)
    for bad in ({"q850_cause": 70000}, {"q850_cause": 128}, {"q850_cause": -1}, {"sip_code": 70000},
                {"attempt": 65536}, {"started_at": datetime(1969, 12, 31, tzinfo=UTC)},
                {"ended_at": datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC)}):
        with pytest.raises(ValidationError):
            FinishedLeg(**(base | bad))
