"""Callback sessions: initiations, state transitions and finished legs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from schemas.envelope import CdrTime, Envelope, PhoneNumber, Record, UtcDatetime, required_when
from schemas.reference import AuthMethod, EntityId

CallbackId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
#: An attempt number as the CDR stores it (``attempt UInt16``).
Attempt = Annotated[int, Field(ge=0, le=65_535)]
#: A Q.850 cause: 7 bits (0..127), as ``pbx.events`` carries it (the CDR column is ``UInt16``).
Q850Cause = Annotated[int, Field(ge=0, le=127)]
#: A SIP response code (RFC 3261: 100..699; the CDR column is ``UInt16``).
SipCode = Annotated[int, Field(ge=100, le=699)]


class LegType(StrEnum):
    INITIATION = "initiation"  # the subscriber's call to the access number (never answered)
    A = "a"  # the system calls the subscriber back
    B = "b"  # the destination the subscriber asked for


class PayerKind(StrEnum):
    USER = "user"
    CARD = "card"
    CALLBACK_USER = "callback_user"  # the system owner: pays unauthenticated leg A


class Payer(Record):
    kind: PayerKind
    id: EntityId

    @property
    def key(self) -> str:
        """Key on ``accounts.balances``."""
        return f"{self.kind.value}:{self.id}"


class SessionState(StrEnum):
    REQUESTED = "requested"
    REJECTED = "rejected"
    SCHEDULED = "scheduled"
    ORIGINATING_A = "originating_a"
    A_ANSWERED = "a_answered"
    AUTHENTICATING = "authenticating"
    AWAITING_DESTINATION = "awaiting_destination"
    DIALING_B = "dialing_b"
    BRIDGED = "bridged"
    COMPLETED = "completed"
    FAILED_A = "failed_a"
    FAILED_B = "failed_b"
    AUTH_FAILED = "auth_failed"


#: Outcomes: a session that reaches one of these never changes state again. ``failed_a`` is final
#: too: a leg-A attempt that fails while retries remain goes back to ``scheduled`` instead.
TERMINAL_STATES = frozenset(
    {
        SessionState.REJECTED,
        SessionState.COMPLETED,
        SessionState.FAILED_A,
        SessionState.FAILED_B,
        SessionState.AUTH_FAILED,
    }
)


class InitiationOrigin(StrEnum):
    DID = "did"
    WEB = "web"


class CallbackInitiation(Envelope):
    """A request for a callback: a call that reached a callback DID, or a web request."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                required_when("origin", "did", ("did", "channel")),
                required_when("origin", "web", ("callback_number", "user_id")),
            ]
        }
    )

    type: Literal["callback.initiation"] = "callback.initiation"
    callback_id: CallbackId
    origin: InitiationOrigin
    ani: PhoneNumber | None = Field(default=None, description="caller ID of the initiation; None = withheld")
    did: PhoneNumber | None = None
    pbx_id: EntityId | None = None
    channel: str | None = Field(default=None, description="initiation channel, to be dropped with the cause")
    uniqueid: str | None = None
    callback_number: PhoneNumber | None = Field(
        default=None, description="number to call back; the ANI for DID initiations, the form's for web"
    )
    destination: PhoneNumber | None = Field(
        default=None, description="leg B number when known up front (web)"
    )
    user_id: EntityId | None = Field(default=None, description="already authenticated user (web)")
    received_at: UtcDatetime

    @model_validator(mode="after")
    def _shape(self) -> CallbackInitiation:
        if self.origin is InitiationOrigin.DID and (self.did is None or self.channel is None):
            raise ValueError("a DID initiation needs did and channel")
        if self.origin is InitiationOrigin.WEB and (self.callback_number is None or self.user_id is None):
            raise ValueError("a web initiation needs callback_number and user_id")
        return self


class SessionTransition(Envelope):
    """One step of a callback session's state machine; the whole history of a session is on the topic."""

    type: Literal["callback.transition"] = "callback.transition"
    callback_id: CallbackId
    sequence: int = Field(
        default=0,
        ge=0,
        description="1, 2, 3 ... per session; a consumer keeps the highest it has seen per callback_id "
        "and drops a record whose sequence is not higher (a processors restart may publish one again)",
    )
    from_state: SessionState | None
    to_state: SessionState
    attempt: int = Field(default=0, ge=0)
    due_at: UtcDatetime | None = Field(default=None, description="when a scheduled attempt is due")
    reason: str = ""
    auth_method: AuthMethod | None = None
    payer: Payer | None = None
    callback_number: PhoneNumber | None = None
    destination: PhoneNumber | None = None


class Disposition(StrEnum):
    ANSWERED = "ANSWERED"
    NO_ANSWER = "NO ANSWER"
    BUSY = "BUSY"
    FAILED = "FAILED"
    CONGESTION = "CONGESTION"


_ENDED_BEFORE_START = "ended_at is before started_at"
_ANSWERED_OUTSIDE = "answered_at must lie between started_at and ended_at"


class FinishedLeg(Envelope):
    """A leg that has ended, ready to be rated. ``leg_id`` is deterministic, so a replay is recognised.

    Every field that ends up in a ``callback.cdr`` column is bounded to what that column stores
    (``infra/migrations/0002_cdr.sql``; ``tests/unit/test_rating_cdr_columns.py`` walks them): a
    leg the CDR table would refuse is refused here, and the rater dead-letters it, instead of the
    CDR sink meeting it.

    The order of the times is a rule JSON Schema cannot state: it is listed in ``x-rules``."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"disposition": {"const": "ANSWERED"}}},
            "then": {"required": ["answered_at"], "properties": {"answered_at": {"type": "string"}}},
            "else": {"properties": {"answered_at": {"type": "null"}}},
            "x-rules": [_ENDED_BEFORE_START, _ANSWERED_OUTSIDE],
        }
    )

    type: Literal["callback.leg"] = "callback.leg"
    leg_id: Annotated[str, Field(min_length=1, max_length=160)]
    callback_id: CallbackId
    leg: LegType
    attempt: Attempt = 0
    pbx_id: EntityId | None = None
    did: PhoneNumber | None = None
    src: PhoneNumber | None = Field(default=None, description="calling number (CID presented)")
    dst: PhoneNumber = Field(
        description="rated number: called-back number (A), destination (B), origin (init)"
    )
    started_at: CdrTime
    answered_at: CdrTime | None = None
    ended_at: CdrTime
    disposition: Disposition
    q850_cause: Q850Cause | None = None
    sip_code: SipCode | None = None
    payer: Payer
    auth_method: AuthMethod | None = None
    final_state: SessionState | None = None

    @model_validator(mode="after")
    def _times(self) -> FinishedLeg:
        if self.ended_at < self.started_at:
            raise ValueError(_ENDED_BEFORE_START)
        if self.answered_at is not None and not (self.started_at <= self.answered_at <= self.ended_at):
            raise ValueError(_ANSWERED_OUTSIDE)
        if (self.disposition is Disposition.ANSWERED) != (self.answered_at is not None):
            raise ValueError("answered_at is set exactly when disposition is ANSWERED")
        return self

    @property
    def duration_ms(self) -> int:
        return ms_between(self.started_at, self.ended_at)

    @property
    def billsec_ms(self) -> int:
        return answered_ms(self.answered_at, self.ended_at)


def leg_id_for(callback_id: str, leg: LegType, attempt: int) -> str:
    """The deterministic id of a leg: one callback, one leg type, one attempt."""
    return f"{callback_id}:{leg.value}:{attempt}"


def command_id_for(callback_id: str, leg: LegType, attempt: int, kind: str) -> str:
    """The deterministic id of a PBX command: the same decision always yields the same id, so a
    command published again after a processors restart is recognised (and skipped) by the originator.

    ``kind`` names the command within the leg and attempt, with a counter where one leg gets several
    of the same kind (``originate``, ``hangup``, ``redirect.pin_prompt.2``, ``dial_b``)."""
    return f"{callback_id}:{leg.value}:{attempt}:{kind}"


def answered_ms(answered_at: UtcDatetime | None, ended_at: UtcDatetime) -> int:
    """A leg's answered time in milliseconds (``billsec_ms``): 0 for a leg never answered."""
    return 0 if answered_at is None else ms_between(answered_at, ended_at)


def ms_between(start: UtcDatetime, end: UtcDatetime) -> int:
    delta = end - start
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000
