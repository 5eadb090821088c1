"""Pure pricing of one leg against one tariff: the seed's and MOR's billing rules, nothing else.

No I/O, no clock, no globals that change: the same leg and tariff always give the same price,
so the rules are unit- and property-tested without a broker, and a re-rate is reproducible.

Rules (docs/rating.md, "Rating rules"):

* the destination is matched against the tariff by longest prefix (``PrefixIndex``);
* an unanswered leg costs 0 (it still yields a CDR, priced 0 with the matched rate);
* billable seconds are the answered milliseconds rounded *up* to whole seconds: a started second
  is a billed second (Asterisk's ``initiatedseconds=yes``), so a 0.3 s answered leg is 1 s;
* minimal time (answered legs only) raises the billable seconds to at least that much;
* grace time: a leg no longer than the grace time costs 0 -- connection fee included -- unless
  minimal time applies (minimal_time_s > 0), which wins;
* the increment rounds the billed seconds up to whole blocks (60/60, 30/6, 1/1 in MOR's
  "minimal/increment" notation);
* price = connection fee + rate per minute * billed seconds / 60, computed exactly in Decimal and
  rounded once, half-up, to the tariff's precision;
* a leg billed for longer than ``MAX_BILLED_S`` (7 days), or whose price cannot be computed or
  stored (``Decimal(18, 8)``: a rate that skipped validation, say ``1e400``), is not priced:
  ``RatingError('unpriceable')``, which the rater dead-letters instead of crashing on it.
  Validated tariffs never get there: their rate and fee bounds keep the longest billable leg's
  price within the CDR store (``schemas.reference.RATE_MAX``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, DecimalException

from rating_stream.prefix_index import PrefixIndex
from schemas.envelope import MONEY_MAX
from schemas.reference import MAX_BILLED_S, Rate, Tariff

ZERO = Decimal(0)
_SIXTY = Decimal(60)
#: Wide enough that ``x / 60`` of any price we can store is exact to far beyond 8 decimal places
#: before the single final rounding (a division by 60 only ever repeats a 3 or a 6, so no
#: intermediate digits can carry into a half-way case).
_CTX = Context(prec=60)
_UNIT = Decimal(1)


#: Terms quoted for an unanswered leg whose number no rate matches: everything zero, prefix ''.
UNRATED = Rate(prefix="", destination="(no rate)", rate_per_minute=ZERO)


class RatingError(Exception):
    """A leg that cannot be priced. ``kind`` is the stable dead-letter ``error_kind``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CompiledTariff:
    """A tariff with its prefix index and rounding quantum built once, reused for every leg."""

    tariff: Tariff
    index: PrefixIndex[Rate]
    quantum: Decimal
    #: (rate, billed seconds) -> price_terms: a tariff prices the same few durations over and over
    #: (increments make billed seconds coarse); bounded, and dropped with the compiled tariff
    priced: dict[tuple[int, int], tuple[Decimal, Decimal, Decimal]] = field(default_factory=dict)

    @classmethod
    def build(cls, tariff: Tariff) -> CompiledTariff:
        return cls(
            tariff, PrefixIndex((r.prefix, r) for r in tariff.rates), Decimal(1).scaleb(-tariff.precision)
        )

    @property
    def tariff_id(self) -> str:
        return self.tariff.tariff_id

    @property
    def currency(self) -> str:
        return self.tariff.currency

    def rate_for(self, number: str) -> Rate:
        match = self.index.longest_match(number)
        if match is None:
            raise RatingError("no_prefix", f"tariff {self.tariff_id!r} has no rate for number {number!r}")
        return match[1]


@dataclass(slots=True)
class Quote:
    """A priced leg: the price and every term that produced it (what a CDR and ``quote`` show).

    Not frozen only because a frozen dataclass is markedly slower to build, and one is built per
    leg on the rater's hot path; treat it as immutable."""

    tariff_id: str
    currency: str
    rate: Rate
    billable_s: int  # answered seconds, rounded up to whole seconds, before any rule
    billed_s: int  # seconds charged after minimal time, grace time and increment
    connection_fee: Decimal  # the fee actually charged (0 when the leg is free)
    duration_charge: Decimal  # rate * billed_s / 60, unrounded
    price: Decimal  # rounded once to the tariff's precision

    @property
    def matched_prefix(self) -> str:
        return self.rate.prefix

    @property
    def matched(self) -> bool:
        """False when no rate matched (only possible for an unanswered leg)."""
        return self.rate is not UNRATED


#: price_terms remembered per compiled tariff, at most
_PRICED_MAX = 100_000


def billable_seconds(billsec_ms: int) -> int:
    """Answered time in whole seconds, rounding a started second up."""
    if billsec_ms < 0:
        raise ValueError("billsec_ms must not be negative")
    return -(-billsec_ms // 1000)


def billed_seconds(billable_s: int, rate: Rate) -> int:
    """Seconds charged for an answered leg of ``billable_s`` seconds (0 = free under grace time)."""
    if rate.minimal_time_s > 0:
        seconds = max(billable_s, rate.minimal_time_s)  # minimal time wins over grace time
    elif billable_s <= rate.grace_time_s:
        return 0
    else:
        seconds = billable_s
    increment = rate.increment_s
    return -(-seconds // increment) * increment


def price_terms(rate: Rate, billed_s: int, quantum: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(connection fee charged, unrounded duration charge, final price) for ``billed_s`` seconds."""
    if billed_s == 0:
        return ZERO, ZERO, ZERO.quantize(quantum)
    duration_charge = _CTX.divide(_CTX.multiply(rate.rate_per_minute, Decimal(billed_s)), _SIXTY)
    exact = _CTX.add(rate.connection_fee, duration_charge)
    return rate.connection_fee, duration_charge, exact.quantize(quantum, rounding=ROUND_HALF_UP, context=_CTX)


def quote(tariff: CompiledTariff, number: str, billsec_ms: int, answered: bool = True) -> Quote:
    """Price a leg to ``number`` that was answered for ``billsec_ms`` milliseconds.

    Raises ``RatingError('no_prefix')`` when no rate of the tariff matches an answered leg's
    number, and ``RatingError('unpriceable')`` when the leg is billed for longer than
    ``MAX_BILLED_S`` or its price cannot be computed or stored. An unanswered leg costs 0
    whatever the number, so one without a matching rate (the initiation call from an origin the
    Callback Tariff refuses) is quoted at ``UNRATED`` rather than dead-lettered: analysts need
    exactly those CDRs ("top origins of refused initiations").
    """
    match = tariff.index.longest_match(number)
    if match is not None:
        rate = match[1]
    elif answered:
        raise RatingError("no_prefix", f"tariff {tariff.tariff_id!r} has no rate for number {number!r}")
    else:
        rate = UNRATED  # a refused origin's initiation call: free, but its CDR is kept for analysts
    billable = billable_seconds(billsec_ms) if answered else 0
    billed = billed_seconds(billable, rate) if answered else 0
    if billed > MAX_BILLED_S:
        raise RatingError(
            "unpriceable",
            f"leg answered {billable} s is billed {billed} s, more than the {MAX_BILLED_S} s (7 days) a "
            "leg may be billed; it goes to review instead of being charged",
        )
    priced = tariff.priced
    cached = priced.get((id(rate), billed))
    try:
        if cached is None:
            cached = price_terms(rate, billed, tariff.quantum)
            if len(priced) < _PRICED_MAX:
                priced[(id(rate), billed)] = cached
        fee, duration_charge, price = cached
    except DecimalException as exc:  # InvalidOperation, Overflow, ...: a rate no validation checked
        raise RatingError(
            "unpriceable",
            f"tariff {tariff.tariff_id!r} rate {rate.prefix!r} (rate_per_minute {rate.rate_per_minute}, "
            f"connection_fee {rate.connection_fee}, precision {tariff.tariff.precision}) cannot price "
            f"{billed} s: {type(exc).__name__}",
        ) from None
    if not ZERO <= price <= MONEY_MAX:
        raise RatingError(
            "unpriceable",
            f"tariff {tariff.tariff_id!r} rate {rate.prefix!r} prices {billed} s at {price}, beyond what a "
            f"CDR stores (Decimal(18, 8), at most {MONEY_MAX})",
        )
    return Quote(tariff.tariff_id, tariff.currency, rate, billable, billed, fee, duration_charge, price)


def max_duration_s(
    balance: Decimal, rate: Rate, *, alongside: Rate | None = None, alongside_elapsed_s: int = 0
) -> int | None:
    """Longest answered time (s) that ``balance`` pays for at ``rate``; None when it is unlimited.

    The leg-B limit of a callback (the call is cut when the money runs out): the largest whole
    number of increments whose price (with connection fee, minimal time applied) does not exceed
    the balance; 0 when not even the first block is affordable. Never more than ``MAX_BILLED_S``
    (in whole increments; with ``alongside``, nor so long that leg A would be billed beyond it):
    the rater would not price a longer leg.

    ``alongside`` is a leg that runs at the same time and is paid from the same balance: leg A of
    the callback, already answered for ``alongside_elapsed_s`` seconds, which keeps costing while
    leg B talks and is charged only when it ends (seed: a callback minute costs leg A's rate plus
    leg B's, 20 + 8 = 28 cents). Then the limit is the longest T for which B's price for T seconds
    plus A's price for ``alongside_elapsed_s + T`` seconds fits the balance, with each leg's own
    minimal time, grace time and increment, so the two legs the rater will charge never exceed it.
    """
    if alongside is None:
        single = _max_single(balance, rate)
        return single if single is None else min(single, _longest_billable(rate))
    per_minute = rate.rate_per_minute + alongside.rate_per_minute
    if balance < 0:
        return 0

    def fits(seconds: int) -> bool:
        cost = _answered_cost(rate, seconds) + _answered_cost(alongside, alongside_elapsed_s + seconds)
        return cost <= balance

    increment = rate.increment_s
    if not fits(increment):
        return 0
    if per_minute == 0:
        return None
    # neither leg may be billed beyond MAX_BILLED_S: leg A has been up alongside_elapsed_s already
    cap = min(_longest_billable(rate), _longest_billable(alongside) - alongside_elapsed_s) // increment
    if cap < 1:
        return 0
    # past the grace times, cost grows by at least per_minute/60 a second: no affordable T lies
    # beyond this many blocks
    grace = max(rate.grace_time_s, alongside.grace_time_s)
    high = (int(_CTX.divide(_CTX.multiply(balance, _SIXTY), per_minute)) + grace) // increment + 2
    high = min(high, cap)
    low = 1  # fits(low * increment) holds; find the largest such block count
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle * increment):
            low = middle
        else:
            high = middle - 1
    return low * increment


def _longest_billable(rate: Rate) -> int:
    """The most seconds, in whole increments of ``rate``, that a leg may be billed."""
    return MAX_BILLED_S // rate.increment_s * rate.increment_s


def _max_single(balance: Decimal, rate: Rate) -> int | None:
    if rate.rate_per_minute == 0:
        return None if balance >= rate.connection_fee else 0
    spendable = balance - rate.connection_fee
    if spendable < 0:
        return 0
    seconds = int(
        _CTX.divide(_CTX.multiply(spendable, _SIXTY), rate.rate_per_minute).to_integral_value(
            rounding=ROUND_FLOOR
        )
    )
    blocks = seconds // rate.increment_s
    seconds = blocks * rate.increment_s
    if seconds < rate.minimal_time_s:
        return 0
    return seconds


def _answered_cost(rate: Rate, seconds: int) -> Decimal:
    """Exact (unrounded) price of a leg answered for ``seconds`` whole seconds at ``rate``."""
    fee, duration_charge, _rounded = price_terms(rate, billed_seconds(seconds, rate), _UNIT)
    return fee + duration_charge
