"""Commands the processors send to the originator on ``pbx.commands``.

``command_id`` is deterministic (the processors derive it from the callback, leg and attempt), so a
command redelivered after a crash is recognised and never executed twice.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, RootModel

from schemas.callback import CallbackId, LegType
from schemas.envelope import Envelope, PhoneNumber
from schemas.reference import EntityId

AmiName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\r\n]+$")]


class PbxCommandBase(Envelope):
    command_id: Annotated[str, Field(min_length=1, max_length=200)]
    callback_id: CallbackId
    server_id: EntityId = Field(description="Callback Server (PBX) that executes it")


class Originate(PbxCommandBase):
    """Call a number (leg A) and, on answer, run ``context``/``exten`` on the PBX."""

    type: Literal["pbx.originate"] = "pbx.originate"
    leg: LegType = LegType.A
    attempt: int = Field(ge=0)
    number: PhoneNumber
    channel: AmiName = Field(description="dial string, e.g. Local/15551234@callback-out")
    context: AmiName
    exten: AmiName = "s"
    priority: int = 1
    caller_id_num: PhoneNumber | None = None
    caller_id_name: str | None = None
    timeout_ms: int = Field(ge=1000, le=600_000, description="Wait Time")
    variables: dict[AmiName, AmiName] = Field(default_factory=dict)


class Hangup(PbxCommandBase):
    """Drop a channel with a Q.850 cause (the initiation call, or leg A after an IVR)."""

    type: Literal["pbx.hangup"] = "pbx.hangup"
    channel: AmiName
    cause: int = Field(ge=1, le=127)


class Redirect(PbxCommandBase):
    """Send a channel to a dialplan context: an IVR (PIN, destination, Busy IVR, Failed IVR)."""

    type: Literal["pbx.redirect"] = "pbx.redirect"
    channel: AmiName
    context: AmiName
    exten: AmiName = "s"
    priority: int = 1
    purpose: Literal["pin_prompt", "destination_prompt", "card_number_prompt", "busy_ivr", "failed_ivr"]


class DialLegB(PbxCommandBase):
    """Dial the destination for an answered leg A and bridge them; cut after ``max_duration_s``."""

    type: Literal["pbx.dial_b"] = "pbx.dial_b"
    a_channel: AmiName
    number: PhoneNumber
    context: AmiName = "callback-dial-b"
    caller_id_num: PhoneNumber | None = None
    timeout_s: int = Field(default=60, ge=1, le=600)
    max_duration_s: int | None = Field(default=None, ge=1, description="from the payer's balance and rates")
    attempt: int = Field(default=0, ge=0)


class SetVar(PbxCommandBase):
    type: Literal["pbx.setvar"] = "pbx.setvar"
    channel: AmiName
    variable: AmiName
    value: Annotated[str, Field(max_length=1024, pattern=r"^[^\r\n]*$")]


PbxCommand = Annotated[Originate | Hangup | Redirect | DialLegB | SetVar, Field(discriminator="type")]


class PbxCommandRecord(RootModel[PbxCommand]):
    """Value of a ``pbx.commands`` record."""
