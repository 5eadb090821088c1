"""Rating outputs: rated CDRs (``cdr.rated``) and balances (``accounts.balances``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.callback import CallbackId, Disposition, LegType, PayerKind, SessionState
from schemas.envelope import Envelope, Money, PhoneNumber, UtcDatetime
from schemas.reference import AuthMethod, Currency, EntityId


class RatedCdr(Envelope):
    """One priced leg: what ClickHouse stores and what billing consumers read."""

    type: Literal["cdr.rated"] = "cdr.rated"
    leg_id: Annotated[str, Field(min_length=1, max_length=160)]
    callback_id: CallbackId
    leg: LegType
    attempt: int = Field(ge=0)
    version: int = Field(ge=1, description="higher wins in ClickHouse (re-rating writes a new version)")
    pbx_id: EntityId | None = None
    did: PhoneNumber | None = None
    src: PhoneNumber | None = None
    dst: PhoneNumber
    started_at: UtcDatetime
    answered_at: UtcDatetime | None = None
    ended_at: UtcDatetime
    duration_ms: int = Field(ge=0)
    billsec_ms: int = Field(ge=0)
    billed_s: int = Field(ge=0, description="seconds charged after increment, minimal and grace time")
    disposition: Disposition
    q850_cause: int | None = None
    sip_code: int | None = None
    payer_kind: PayerKind
    payer_id: EntityId
    tariff_id: EntityId
    matched_prefix: str
    rate_per_minute: Money
    connection_fee: Money
    increment_s: int
    minimal_time_s: int
    grace_time_s: int
    price: Money = Field(ge=0)
    currency: Currency
    auth_method: AuthMethod | None = None
    final_state: SessionState | None = None
    rated_at: UtcDatetime


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
