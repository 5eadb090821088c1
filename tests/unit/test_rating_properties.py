"""Hypothesis properties of pricing: monotone in duration, never negative, exact, deterministic."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from rating_stream.engine import CompiledTariff, max_duration_s, quote
from schemas.reference import MAX_BILLED_S, Rate, Tariff

cents = st.integers(min_value=0, max_value=10_000).map(lambda c: Decimal(c).scaleb(-2))
sub_cents = st.integers(min_value=0, max_value=1_000_000).map(lambda c: Decimal(c).scaleb(-6))
rates = st.builds(
    Rate,
    prefix=st.just("1"),
    rate_per_minute=st.one_of(cents, sub_cents),
    connection_fee=st.one_of(st.just(Decimal(0)), cents),
    increment_s=st.sampled_from([1, 6, 30, 60]) | st.integers(1, 3600),
    minimal_time_s=st.sampled_from([0, 0, 30, 60]) | st.integers(0, 3600),
    grace_time_s=st.sampled_from([0, 0, 3, 5]) | st.integers(0, 3600),
)
durations = st.integers(min_value=0, max_value=6 * 3600 * 1000)


def compile_(rate: Rate, precision: int = 2) -> CompiledTariff:
    return CompiledTariff.build(Tariff(tariff_id="p", precision=precision, rates=[rate]))


@settings(max_examples=300)
@given(rates, durations, durations)
def test_price_never_decreases_with_duration(rate, a, b):
    t = compile_(rate, 4)
    short, long_ = sorted((a, b))
    assert quote(t, "1", short).price <= quote(t, "1", long_).price


@settings(max_examples=300)
@given(rates, durations, st.booleans())
def test_price_is_never_negative(rate, ms, answered):
    q = quote(compile_(rate, 4), "1", ms if answered else 0, answered)
    assert q.price >= 0
    assert q.billed_s >= 0


@settings(max_examples=300)
@given(
    st.builds(
        Rate,
        prefix=st.just("1"),
        rate_per_minute=cents,
        connection_fee=cents,
        increment_s=st.integers(1, 600),
        minimal_time_s=st.integers(0, 600),
        grace_time_s=st.integers(0, 600),
    ),
    durations,
)
def test_price_is_exact_to_the_cent(rate, ms):
    """At precision 2 the price is a whole number of cents, equal to exact rational arithmetic
    (independent of Decimal) rounded half-up once."""
    q = quote(compile_(rate, 2), "1", ms)
    assert q.price * 100 == int(q.price * 100)
    assert q.price.as_tuple().exponent == -2
    if q.billed_s == 0:
        assert q.price == 0
    else:
        exact = Fraction(rate.connection_fee) + Fraction(rate.rate_per_minute) * q.billed_s / 60
        in_cents = Decimal(exact.numerator * 100) / Decimal(exact.denominator)
        expected = in_cents.quantize(Decimal(1), rounding=ROUND_HALF_UP) / 100
        assert q.price == expected


@settings(max_examples=200)
@given(rates, durations, st.integers(0, 8))
def test_same_input_same_price(rate, ms, precision):
    first = quote(compile_(rate, precision), "1", ms)
    again = quote(compile_(rate, precision), "1", ms)
    assert first == again
    assert str(first.price) == str(again.price)


@settings(max_examples=300)
@given(rates, rates, st.integers(0, 3600), st.integers(0, 100_000).map(lambda c: Decimal(c).scaleb(-2)))
def test_leg_b_limit_alongside_leg_a_never_lets_the_two_legs_cost_more_than_the_balance(
    leg_b, leg_a, a_elapsed_s, balance
):
    """The limit from ``max_duration_s`` is exact: both legs priced by the rater's own ``quote`` at
    that duration fit the balance, and one more increment of leg B would not (unless unlimited)."""
    tb, ta = compile_(leg_b, 8), compile_(leg_a, 8)

    def cost(seconds: int) -> Decimal:
        b = quote(tb, "1", seconds * 1000).duration_charge + quote(tb, "1", seconds * 1000).connection_fee
        a_quote = quote(ta, "1", (a_elapsed_s + seconds) * 1000)
        return b + a_quote.duration_charge + a_quote.connection_fee

    limit = max_duration_s(balance, leg_b, alongside=leg_a, alongside_elapsed_s=a_elapsed_s)
    if limit is None:
        assert leg_b.rate_per_minute == 0 and leg_a.rate_per_minute == 0
        return
    assert limit % leg_b.increment_s == 0
    # the limit never lets either leg be billed beyond MAX_BILLED_S (the rater would not price it)
    longest = min(
        MAX_BILLED_S // leg_b.increment_s * leg_b.increment_s,
        MAX_BILLED_S // leg_a.increment_s * leg_a.increment_s - a_elapsed_s,
    )
    assert limit <= longest
    if limit == 0:
        assert cost(leg_b.increment_s) > balance
    elif limit + leg_b.increment_s > longest:  # capped: one more block would be unbillable
        assert cost(limit) <= balance
    else:
        assert cost(limit) <= balance < cost(limit + leg_b.increment_s)
