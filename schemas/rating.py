"""Rating outputs: rated CDRs (``cdr.rated``), balances (``accounts.balances``) and the per-leg
balance ledger (``accounts.ledger``); and re-priced legs on their way to the rater
(``cdr.rerates``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from schemas.callback import (
    Attempt,
    CallbackId,
    Disposition,
    LegType,
    Payer,
    PayerKind,
    Q850Cause,
    SessionState,
    SipCode,
)
from schemas.envelope import CDR_SPAN_MAX_MS, CdrTime, Envelope, Money, NonNegativeMoney, PhoneNumber
from schemas.reference import (
    MAX_BILLED_S,
    AuthMethod,
    ConnectionFee,
    Currency,
    EntityId,
    Prefix,
    RatePerMinute,
)


class RatedCdr(Envelope):
    """One priced leg: what ClickHouse stores and what billing consumers read.

    Every field is bounded to what its ``callback.cdr`` column stores (``UInt16`` attempt and
    causes, ``DateTime`` times, ``Decimal(18, 8)`` money, ...), so a CDR that validates is a row
    the table takes; ``tests/unit/test_rating_cdr_columns.py`` checks each bound against the
    migration."""

    type: Literal["cdr.rated"] = "cdr.rated"
    leg_id: Annotated[str, Field(min_length=1, max_length=160)]
    callback_id: CallbackId
    leg: LegType
    attempt: Attempt
    version: int = Field(
        ge=1, le=2**64 - 1, description="higher wins in ClickHouse (re-rating writes a new version)"
    )
    pbx_id: EntityId | None = None
    did: PhoneNumber | None = None
    src: PhoneNumber | None = None
    dst: PhoneNumber
    started_at: CdrTime
    answered_at: CdrTime | None = None
    ended_at: CdrTime
    duration_ms: int = Field(ge=0, le=CDR_SPAN_MAX_MS)
    billsec_ms: int = Field(ge=0, le=CDR_SPAN_MAX_MS)
    billed_s: int = Field(
        ge=0, le=MAX_BILLED_S, description="seconds charged after increment, minimal and grace time"
    )
    disposition: Disposition
    q850_cause: Q850Cause | None = None
    sip_code: SipCode | None = None
    payer_kind: PayerKind
    payer_id: EntityId
    tariff_id: EntityId
    matched_prefix: Prefix
    destination: str = Field(
        default="", description="name of the matched rate's destination (the tariff's Rate.destination)"
    )
    rate_per_minute: RatePerMinute
    connection_fee: ConnectionFee
    increment_s: int = Field(ge=1, le=3600)
    minimal_time_s: int = Field(ge=0, le=3600)
    grace_time_s: int = Field(ge=0, le=3600)
    price: NonNegativeMoney
    currency: Currency
    auth_method: AuthMethod | None = None
    final_state: SessionState | None = None
    rated_at: CdrTime

    @property
    def payer(self) -> Payer:
        """Who this leg was charged to (``payer.key`` keys it on ``cdr.rerates`` and the balances)."""
        return Payer(kind=self.payer_kind, id=self.payer_id)


class BalanceUpdate(Envelope):
    """A payer's balance after one rater transaction (a batch of legs), or after a re-rate.

    The topic is compacted: it keeps the latest balance per payer, which is what a consumer that
    wants "the balance now" reads. It is not a ledger: one record covers every charge the batch
    made to the payer (``delta`` is their sum, ``leg_id`` the last of them, ``sequence`` the count
    of charges so far), and compaction drops older records. The leg by leg history is
    ``accounts.ledger`` (``LedgerEntry``), written in the same transaction."""

    type: Literal["balance.update"] = "balance.update"
    payer_kind: PayerKind
    payer_id: EntityId
    balance: Money
    currency: Currency
    delta: Money = Field(
        description="signed sum of the changes this record covers (negative = charged): every "
        "accounts.ledger entry of this payer since its previous balance record"
    )
    leg_id: str | None = Field(
        default=None, description="the last leg whose charge this record covers; None for top-ups"
    )
    sequence: int = Field(ge=0, description="charges applied to this payer so far (its ledger's last)")


class LedgerEntryKind(StrEnum):
    CHARGE = "charge"  # a rated leg's price, debited
    ADJUSTMENT = "adjustment"  # a re-rate: new price minus the old one (negative amount = refund)


class LedgerEntry(Envelope):
    """One change to one payer's balance, leg by leg: the ``accounts.ledger`` topic.

    Keyed by payer, so a payer's entries are in order on one partition; written in the rater's
    transaction with the leg's CDR and the payer's ``BalanceUpdate``. A consumer rebuilds a payer's
    history by folding its entries in order: each one's ``balance`` is the previous one's plus
    ``amount``. ``event_id`` is deterministic (payer, leg, CDR version), so a consumer that reads
    an entry twice (at-least-once, or read_uncommitted) can drop the copy. A leg priced at zero
    changes no balance and has no entry."""

    type: Literal["ledger.entry"] = "ledger.entry"
    payer_kind: PayerKind
    payer_id: EntityId
    kind: LedgerEntryKind
    leg_id: str = Field(min_length=1, max_length=160)
    cdr_version: int = Field(ge=1, description="the CDR version (cdr.rated) this change goes with")
    amount: Money = Field(description="signed change to the balance (negative = charged)")
    balance: Money = Field(description="the payer's balance after this change")
    currency: Currency
    sequence: int = Field(ge=0, description="charges applied to this payer so far, this one included")


class RerateRequest(Envelope):
    """A stored leg priced again (``callback rerate``), for the rater that owns its payer to apply.

    Keyed by payer like ``callback.legs``, so it reaches the rater holding that payer's balance,
    which publishes ``cdr`` on ``cdr.rated`` and corrects the balance by ``cdr.price`` minus
    ``previous_price`` in one transaction. A request whose ``cdr.version`` the rater has already
    applied to that leg is dropped, so running ``callback rerate`` twice before the sink has
    stored the first run's CDRs changes nothing twice."""

    type: Literal["cdr.rerate"] = "cdr.rerate"
    previous_price: NonNegativeMoney = Field(description="the price of the version this one replaces")
    cdr: RatedCdr = Field(description="the leg's new CDR: version one above the stored one")
