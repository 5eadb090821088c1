"""Every rating rule of docs/rating.md ("Rating rules"), one test each, and the seed's 20c + 8c = 28c
example."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from rating_stream.engine import (
    UNRATED,
    CompiledTariff,
    RatingError,
    billable_seconds,
    billed_seconds,
    max_duration_s,
    quote,
)
from rating_stream.prefix_index import PrefixIndex
from schemas.carrier_config import load_carrier_config
from schemas.reference import Rate, Tariff

CARRIER = Path(__file__).resolve().parents[2] / "examples" / "carrier.yaml"
D = Decimal


def tariff(*rates: dict, precision: int = 4, currency: str = "USD") -> CompiledTariff:
    return CompiledTariff.build(
        Tariff(tariff_id="t1", currency=currency, precision=precision, rates=[Rate(**r) for r in rates])
    )


def one(rate: str = "0.60", **terms) -> CompiledTariff:
    return tariff({"prefix": "1", "rate_per_minute": rate, **terms})


# --- prefix matching ------------------------------------------------------------------------------


def test_longest_prefix_wins():
    t = tariff(
        {"prefix": "234", "rate_per_minute": "0.20"},
        {"prefix": "2348", "rate_per_minute": "0.22"},
        {"prefix": "23480", "rate_per_minute": "0.30"},
    )
    assert quote(t, "2348031234567", 60_000).matched_prefix == "23480"
    assert quote(t, "2348131234567", 60_000).matched_prefix == "2348"
    assert quote(t, "2341234567", 60_000).matched_prefix == "234"


def test_catch_all_prefix_matches_what_nothing_longer_does():
    t = tariff({"prefix": "", "rate_per_minute": "1.00"}, {"prefix": "44", "rate_per_minute": "0.03"})
    assert quote(t, "4420", 60_000).price == D("0.0300")
    assert quote(t, "999", 60_000).matched_prefix == ""


def test_no_prefix_for_an_answered_leg_is_an_error():
    with pytest.raises(RatingError) as err:
        quote(tariff({"prefix": "44", "rate_per_minute": "0.03"}), "2341234567", 60_000)
    assert err.value.kind == "no_prefix"


def test_unanswered_leg_without_a_rate_is_free_and_unrated():
    q = quote(tariff({"prefix": "44", "rate_per_minute": "0.03"}), "8821234", 0, answered=False)
    assert q.price == 0 and q.rate is UNRATED and not q.matched


def test_prefix_index_is_not_fooled_by_a_prefix_longer_than_the_number():
    index = PrefixIndex([("12345", "long"), ("1", "short")])
    assert index.longest_match("123") == ("1", "short")
    assert index.longest_match("9") is None
    assert len(index) == 2


def test_prefix_index_rejects_duplicates():
    with pytest.raises(ValueError):
        PrefixIndex([("1", 1), ("1", 2)])


# --- seconds --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ms", "seconds"), [(0, 0), (1, 1), (999, 1), (1000, 1), (1001, 2), (60_000, 60)])
def test_a_started_second_is_a_billed_second(ms, seconds):
    assert billable_seconds(ms) == seconds


@pytest.mark.parametrize(
    ("billable", "minimal", "increment", "billed"),
    [
        (1, 60, 60, 60),
        (60, 60, 60, 60),
        (61, 60, 60, 120),  # 60/60
        (1, 30, 6, 30),
        (30, 30, 6, 30),
        (31, 30, 6, 36),
        (37, 30, 6, 42),  # 30/6
        (1, 1, 1, 1),
        (59, 1, 1, 59),  # 1/1
        (10, 45, 60, 60),  # minimal time not a whole block: rounded up to the block
    ],
)
def test_minimal_time_then_increment(billable, minimal, increment, billed):
    rate = Rate(prefix="1", rate_per_minute=D("0.6"), minimal_time_s=minimal, increment_s=increment)
    assert billed_seconds(billable, rate) == billed


def test_increment_rounds_up_to_the_block():
    assert quote(one(increment_s=30), "1", 31_000).billed_s == 60
    assert quote(one(increment_s=30), "1", 30_000).billed_s == 30


# --- grace, minimal, connection fee ----------------------------------------------------------------


def test_a_leg_no_longer_than_grace_costs_nothing_not_even_the_connection_fee():
    t = one(grace_time_s=5, connection_fee="0.05")
    assert quote(t, "1", 5_000).price == 0
    assert quote(t, "1", 5_000).billed_s == 0
    assert quote(t, "1", 5_001).price == D("0.0500") + D("0.0600")  # 6 s at 0.60/min


def test_minimal_time_wins_over_grace():
    q = quote(one(grace_time_s=10, minimal_time_s=30, increment_s=6), "1", 3_000)
    assert q.billed_s == 30 and q.price == D("0.3000")


def test_zero_answered_seconds_without_minimal_time_is_free():
    assert quote(one(), "1", 0).price == 0


def test_minimal_time_applies_to_a_zero_second_answered_leg():
    assert quote(one(minimal_time_s=30), "1", 0).billed_s == 30


def test_connection_fee_is_added_once():
    q = quote(one("0.60", connection_fee="0.05"), "1", 60_000)
    assert q.price == D("0.6500") and q.connection_fee == D("0.05")


def test_unanswered_leg_costs_zero_even_with_fee_and_minimal_time():
    q = quote(one(connection_fee="0.05", minimal_time_s=60), "1", 0, answered=False)
    assert q.price == 0 and q.billed_s == 0 and q.matched_prefix == "1"


# --- money ----------------------------------------------------------------------------------------


def test_price_is_decimal_rounded_once_half_up_to_the_tariffs_precision():
    # 0.01/min for 7 s = 0.0011666..; rounded once to 4 places
    q = quote(tariff({"prefix": "1", "rate_per_minute": "0.01"}), "1", 7_000)
    assert isinstance(q.price, Decimal) and q.price == D("0.0012") and q.price.as_tuple().exponent == -4
    # half-up at 2 places: 0.03/min for 1 s = 0.0005 -> 0.00 (2 dp) but exactly 0.0005 -> 0.0005 (4 dp)
    assert quote(tariff({"prefix": "1", "rate_per_minute": "0.03"}, precision=4), "1", 1_000).price == D(
        "0.0005"
    )
    assert quote(tariff({"prefix": "1", "rate_per_minute": "0.30"}, precision=2), "1", 1_000).price == D(
        "0.01"
    )


def test_no_intermediate_rounding():
    # 10 blocks of 1 s at 0.01/min: summing per-second prices rounded to 4 dp would give 0.0020
    q = quote(tariff({"prefix": "1", "rate_per_minute": "0.01"}), "1", 10_000)
    assert q.price == D("0.0017")


def test_seeds_example_one_minute_to_nigeria_plus_one_minute_to_spain_costs_28_cents():
    config = load_carrier_config(CARRIER)
    retail = CompiledTariff.build(next(t for t in config.tariffs if t.tariff_id == "retail-usd"))
    leg_a = quote(retail, "2341234567", 60_000)  # the subscriber called back in Nigeria
    leg_b = quote(retail, "34911234567", 60_000)  # the destination in Spain
    assert (leg_a.price, leg_b.price) == (D("0.2000"), D("0.0800"))
    assert leg_a.price + leg_b.price == D("0.28")


# --- balance -> maximum duration --------------------------------------------------------------------


def test_max_duration_is_whole_increments_the_balance_pays_for():
    rate = Rate(prefix="1", rate_per_minute=D("0.60"), connection_fee=D("0.10"), increment_s=6)
    assert max_duration_s(D("1.00"), rate) == 90  # 0.90 left buys 90 s
    assert max_duration_s(D("0.15"), rate) == 0  # 0.05 left buys 5 s: less than one 6 s block
    assert max_duration_s(D("0.05"), rate) == 0
    assert max_duration_s(D("5"), Rate(prefix="1", rate_per_minute=D("0"))) is None


def test_max_duration_respects_minimal_time():
    rate = Rate(prefix="1", rate_per_minute=D("0.60"), minimal_time_s=60)
    assert max_duration_s(D("0.59"), rate) == 0
    assert max_duration_s(D("0.60"), rate) == 60


def test_max_duration_alongside_leg_a_is_the_seeds_28_cents_a_minute():
    leg_a = Rate(prefix="234", rate_per_minute=D("0.20"), increment_s=60)  # Nigeria, the caller
    leg_b = Rate(prefix="34", rate_per_minute=D("0.08"), increment_s=1)  # Spain, the destination
    assert max_duration_s(D("0.28"), leg_b) == 210  # leg B alone: 3.5 minutes
    assert max_duration_s(D("0.28"), leg_b, alongside=leg_a) == 60  # both legs: one minute
    # leg A already answered for 30 s: its first minute is paid by the first 30 s of leg B
    assert max_duration_s(D("0.28"), leg_b, alongside=leg_a, alongside_elapsed_s=30) == 30
    assert max_duration_s(D("0.27"), leg_b, alongside=leg_a, alongside_elapsed_s=30) == 30
    assert max_duration_s(D("0.19"), leg_b, alongside=leg_a) == 0  # not even leg A's first block
    assert max_duration_s(D("-1"), leg_b, alongside=leg_a) == 0


def test_max_duration_alongside_is_unlimited_only_when_both_legs_are_free():
    free = Rate(prefix="1", rate_per_minute=D("0"))
    fee_only = Rate(prefix="1", rate_per_minute=D("0"), connection_fee=D("0.05"))
    assert max_duration_s(D("1"), free, alongside=free) is None
    assert max_duration_s(D("0.04"), fee_only, alongside=free) == 0
    assert max_duration_s(D("0.05"), fee_only, alongside=free) is None
