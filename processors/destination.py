"""Whether the destination a caller keyed in may be dialled, and for how long. Pure.

The destination is rated on the payer's tariff (the recognised user's or card's), longest prefix
first. It is refused when no rate matches, or when the balance cannot pay for the first block of
the call (connection fee, minimal time). Otherwise leg B gets the longest duration the balance pays
for, while leg A keeps running at its own rate on the same balance: rating answers that question
(``rating_stream.engine.max_duration_s``); this module only gathers its inputs.

The balance is the payer's last one on ``accounts.balances`` (the rater's ledger), or the opening
balance of its configuration when the rater has not charged it yet; a postpaid user may go down to
minus its credit limit. Legs of other callbacks of the same payer that are still under way are not
charged yet, so two simultaneous callbacks can each be given the whole balance; the rater still
charges both (a prepaid balance then ends below zero), as MOR does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from callback.reference import ReferenceData
from rating_stream.engine import RatingError, max_duration_s
from rating_stream.payer import payer_terms
from schemas.callback import Payer, PayerKind, ms_between
from schemas.reference import Rate


@dataclass(frozen=True)
class DestinationDecision:
    allowed: bool
    reason: str = ""
    #: seconds leg B may last (None: the rates are free, no limit)
    max_duration_s: int | None = None
    rate: Rate | None = None
    balance: Decimal | None = None


def spendable_balance(payer: Payer, ref: ReferenceData, opening: Decimal) -> Decimal:
    """What ``payer`` may still spend: its ledger balance (else ``opening``), plus a postpaid
    user's credit limit."""
    update = ref.balance(payer.key)
    balance = update.balance if update is not None else opening
    if payer.kind is not PayerKind.CARD:
        user = ref.users.get(payer.id)
        if user is not None and not user.prepaid:
            balance += user.credit_limit
    return balance


def decide_destination(
    payer: Payer,
    destination: str,
    ref: ReferenceData,
    *,
    leg_a_number: str | None,
    leg_a_answered_at: datetime | None,
    now: datetime,
) -> DestinationDecision:
    """May ``payer`` call ``destination`` now, with leg A to ``leg_a_number`` answered since
    ``leg_a_answered_at``, and for how long?"""
    try:
        terms = payer_terms(payer, ref)
    except RatingError as exc:
        return DestinationDecision(False, f"payer_not_rateable: {exc.kind}")
    match = terms.tariff.index.longest_match(destination)
    if match is None:
        return DestinationDecision(False, "no_rate_for_destination")
    rate = match[1]
    leg_a = terms.tariff.index.longest_match(leg_a_number) if leg_a_number else None
    elapsed_s = 0
    if leg_a_answered_at is not None:
        elapsed_s = -(-max(0, ms_between(leg_a_answered_at, now)) // 1000)
    balance = spendable_balance(payer, ref, terms.opening.balance)
    limit = max_duration_s(
        balance, rate, alongside=leg_a[1] if leg_a else None, alongside_elapsed_s=elapsed_s
    )
    if limit == 0:
        return DestinationDecision(False, "insufficient_balance", 0, rate, balance)
    return DestinationDecision(True, "", limit, rate, balance)
