"""The processors' own topics: timer ticks and admission verdicts for the session agent
(``callback.control``), and the fraud guard's requests (``callback.admission``).

These are internal to the processors (no other service needs to read them), but they are Kafka
topics like any other, so they have contracts, are in the catalogue and are created by
``callback topics apply``.

* A **tick** says "the timer of this session is due": the session agent re-checks that the session
  still waits for exactly that timer (``timer_seq``) before it acts, so a late, repeated or stale
  tick changes nothing.
* The **guard** is a single-partition stage: every initiation that passes the session agent's
  checks asks it for admission, so the counters per caller ID and per access number are exact
  across all workers. Its verdict comes back on ``callback.control``; when a session ends, a
  release frees its caller ID.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, RootModel

from schemas.callback import CallbackId
from schemas.envelope import Envelope, PhoneNumber, UtcDatetime


class TimerKind(StrEnum):
    ATTEMPT = "attempt"  # originate leg A, attempt n (and drop the initiation if still ringing)
    WATCHDOG = "watchdog"  # nothing came while the session waited: act so it cannot hang for ever
    EXPIRE = "expire"  # the session's retention is over: forget it


class TimerTick(Envelope):
    type: Literal["callback.tick"] = "callback.tick"
    callback_id: CallbackId
    timer_seq: int = Field(ge=1, description="the session's timer this tick is for")
    kind: TimerKind
    due_at: UtcDatetime


class AdmissionVerdict(Envelope):
    type: Literal["callback.admission_verdict"] = "callback.admission_verdict"
    callback_id: CallbackId
    admitted: bool
    reason: str = Field(default="", description="why not: fraud_ani_rate, fraud_did_rate, fraud_live_session")


ControlRecord = Annotated[TimerTick | AdmissionVerdict, Field(discriminator="type")]


class ControlRecordValue(RootModel[ControlRecord]):
    """Value of a ``callback.control`` record."""


class AdmissionRequest(Envelope):
    """An initiation the session agent accepted, asking the guard whether the fraud limits allow it."""

    type: Literal["guard.request"] = "guard.request"
    callback_id: CallbackId
    #: the number called back (the ANI of a DID initiation, the form's number for a web one)
    number: PhoneNumber
    did: PhoneNumber | None = None
    received_at: UtcDatetime
    per_number_per_minute: int = Field(ge=0, description="0 = no limit")
    per_did_per_minute: int = Field(ge=0, description="0 = no limit")
    one_live_session: bool


class SessionReleased(Envelope):
    """A session the guard admitted has ended: its number may be called back again."""

    type: Literal["guard.release"] = "guard.release"
    callback_id: CallbackId
    number: PhoneNumber


AdmissionRecord = Annotated[AdmissionRequest | SessionReleased, Field(discriminator="type")]


class AdmissionRecordValue(RootModel[AdmissionRecord]):
    """Value of a ``callback.admission`` record."""
