"""Domain events the AMI producer derives from Asterisk, on ``pbx.events``.

Each event names the PBX, the channel and its Uniqueid/Linkedid, and, when the channel carries the
variables the originator set (``CALLBACK_ID``, ``LEG``, ``ATTEMPT``), which callback and leg it is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, RootModel

from schemas.callback import CallbackId, LegType
from schemas.envelope import Envelope, PhoneNumber, UtcDatetime
from schemas.reference import EntityId


class PbxEventBase(Envelope):
    pbx_id: EntityId
    channel: str | None = None
    uniqueid: str | None = None
    linkedid: str | None = None
    callback_id: CallbackId | None = None
    leg: LegType | None = None
    attempt: int | None = Field(default=None, ge=0)
    occurred_at: UtcDatetime = Field(description="when the PBX reported it")

    @property
    def kafka_key(self) -> str:
        """Key on ``pbx.events``: the callback when known, else the Asterisk Linkedid (then Uniqueid)."""
        return self.callback_id or self.linkedid or self.uniqueid or self.pbx_id


class ChannelAnswered(PbxEventBase):
    type: Literal["channel.answered"] = "channel.answered"
    caller_id_num: PhoneNumber | None = None
    connected_num: PhoneNumber | None = None


class ChannelHangup(PbxEventBase):
    type: Literal["channel.hangup"] = "channel.hangup"
    q850_cause: int = Field(ge=0, le=127)
    cause_text: str = ""
    sip_code: int | None = Field(default=None, description="SIP response mapped from the Q.850 cause")


class DialStatus(StrEnum):
    ANSWER = "ANSWER"
    BUSY = "BUSY"
    NOANSWER = "NOANSWER"
    CANCEL = "CANCEL"
    CONGESTION = "CONGESTION"
    CHANUNAVAIL = "CHANUNAVAIL"
    DONTCALL = "DONTCALL"
    TORTURE = "TORTURE"
    INVALIDARGS = "INVALIDARGS"
    # DialEnd-only statuses of real Asterisk (13+): the dialled channel was forwarded / continued in the
    # dialplan (CONTINUE, GOTO), or the dial was aborted by a masquerade (ABORT). Seen in real transcripts.
    CONTINUE = "CONTINUE"
    GOTO = "GOTO"
    ABORT = "ABORT"


class DialResult(PbxEventBase):
    type: Literal["dial.result"] = "dial.result"
    dial_status: DialStatus
    dest_channel: str | None = None
    dest_uniqueid: str | None = None
    dest_number: str | None = None


class OriginateOutcome(StrEnum):
    FAILED = "failed"
    HANGUP = "hangup"
    NO_ANSWER = "no_answer"
    ANSWERED = "answered"
    BUSY = "busy"
    CONGESTION = "congestion"


#: Asterisk OriginateResponse ``Reason`` codes (AST_CONTROL_*), as the issue and Asterisk define them.
ORIGINATE_REASONS: dict[int, OriginateOutcome] = {
    0: OriginateOutcome.FAILED,
    1: OriginateOutcome.HANGUP,
    3: OriginateOutcome.NO_ANSWER,
    4: OriginateOutcome.ANSWERED,
    5: OriginateOutcome.BUSY,
    8: OriginateOutcome.CONGESTION,
}


class OriginateResult(PbxEventBase):
    type: Literal["originate.result"] = "originate.result"
    reason_code: int
    outcome: OriginateOutcome
    command_id: str | None = Field(default=None, description="the pbx.commands id that asked for it")


class IvrPrompt(StrEnum):
    PIN = "pin"
    DESTINATION = "destination"
    CARD_NUMBER = "card_number"


class IvrInput(PbxEventBase):
    type: Literal["ivr.input"] = "ivr.input"
    prompt: IvrPrompt
    digits: Annotated[str, Field(pattern=r"^[0-9*#]{0,64}$")]


class CommandFailed(PbxEventBase):
    """The originator could not execute a command (PBX unreachable, action refused)."""

    type: Literal["command.failed"] = "command.failed"
    command_id: str
    command_type: str
    error: str
    outcome_unknown: bool = Field(
        default=False,
        description="True when the action may have reached the PBX (originator crashed between "
        "its journal and the AMI send, or lost the connection before the reply); "
        "it is never retried, so a phone does not ring twice",
    )


PbxEvent = Annotated[
    ChannelAnswered | ChannelHangup | DialResult | OriginateResult | IvrInput | CommandFailed,
    Field(discriminator="type"),
]


class PbxEventRecord(RootModel[PbxEvent]):
    """Value of a ``pbx.events`` record: one of the event types, told apart by ``type``."""
