"""Rating outputs: rated CDRs (``cdr.rated``) and balances (``accounts.balances``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.callback import (
    Attempt,
    CallbackId,
    Disposition,
    LegType,
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


class BalanceUpdate(Envelope):
    """The payer's balance after a charge; the compacted topic keeps the latest per payer."""

    type: Literal["balance.update"] = "balance.update"
    payer_kind: PayerKind
    payer_id: EntityId
    balance: Money
    currency: Currency
    delta: Money = Field(description="signed change that produced this balance (negative = charge)")
    leg_id: str | None = Field(default=None, description="leg whose charge produced it; None for top-ups")
    sequence: int = Field(ge=0, description="charges applied to this payer so far")
