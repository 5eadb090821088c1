"""Telephony code tables the simulator must spell exactly like Asterisk.

Q.850 hangup causes with Asterisk's ``ast_cause2str`` texts (``Cause-txt``), channel state
names (``ChannelStateDesc``), Dial statuses and the Originate ``Reason`` codes, plus the
mappings between them. Consumers key on these strings, so they are data, not prose.
"""

from __future__ import annotations

from enum import IntEnum

NORMAL_CLEARING = 16
USER_BUSY = 17
NO_USER_RESPONSE = 18
NO_ANSWER = 19
SUBSCRIBER_ABSENT = 20
CALL_REJECTED = 21
NORMAL_CIRCUIT_CONGESTION = 34

#: Asterisk's ``causes[]`` table (main/channel.c); anything else prints as "Unknown".
CAUSE_TEXT: dict[int, str] = {
    1: "Unallocated (unassigned) number",
    2: "No route to specified transmit network",
    3: "No route to destination",
    5: "Misdialed trunk prefix",
    6: "Channel unacceptable",
    7: "Call awarded and being delivered in an established channel",
    8: "Pre-empted",
    14: "Number ported elsewhere",
    16: "Normal Clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    20: "Subscriber absent",
    21: "Call Rejected",
    22: "Number changed",
    23: "Redirected to new destination",
    26: "Answered elsewhere",
    27: "Destination out of order",
    28: "Invalid number format",
    29: "Facility rejected",
    30: "Response to STATus ENQuiry",
    31: "Normal, unspecified",
    34: "Circuit/channel congestion",
    38: "Network out of order",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    43: "Access information discarded",
    44: "Requested channel not available",
    50: "Facility not subscribed",
    52: "Outgoing call barred",
    54: "Incoming call barred",
    57: "Bearer capability not authorized",
    58: "Bearer capability not available",
    65: "Bearer capability not implemented",
    66: "Channel not implemented",
    69: "Facility not implemented",
    81: "Invalid call reference value",
    88: "Incompatible destination",
    95: "Invalid message unspecified",
    96: "Mandatory information element is missing",
    97: "Message type nonexist.",
    98: "Wrong message",
    99: "Info. element nonexist or not implemented",
    100: "Invalid information element contents",
    101: "Message not compatible with call state",
    102: "Recover on timer expiry",
    103: "Mandatory IE length error",
    111: "Protocol error, unspecified",
    127: "Interworking, unspecified",
}


def cause_text(cause: int) -> str:
    return CAUSE_TEXT.get(cause, "Unknown")


class ChannelState(IntEnum):
    """``enum ast_channel_state``; the numeric value is the ``ChannelState`` header."""

    DOWN = 0
    RSRVD = 1
    OFFHOOK = 2
    DIALING = 3
    RING = 4
    RINGING = 5
    UP = 6
    BUSY = 7

    @property
    def desc(self) -> str:
        return _STATE_DESC[self]


_STATE_DESC = {
    ChannelState.DOWN: "Down",
    ChannelState.RSRVD: "Rsrvd",
    ChannelState.OFFHOOK: "OffHook",
    ChannelState.DIALING: "Dialing",
    ChannelState.RING: "Ring",
    ChannelState.RINGING: "Ringing",
    ChannelState.UP: "Up",
    ChannelState.BUSY: "Busy",
}


class DialStatus:
    """``DialStatus`` values of DialEnd (the DIALSTATUS channel variable of app_dial)."""

    ANSWER = "ANSWER"
    BUSY = "BUSY"
    NOANSWER = "NOANSWER"
    CONGESTION = "CONGESTION"
    CHANUNAVAIL = "CHANUNAVAIL"
    CANCEL = "CANCEL"


class OriginateReason(IntEnum):
    """``Reason`` of OriginateResponse: the last control frame seen while dialling."""

    FAILED = 0  # channel could not be requested / called
    HANGUP = 1
    RING_TIMEOUT = 3  # rang until the Originate Timeout: no answer
    ANSWERED = 4
    BUSY = 5
    CONGESTION = 8


_REASON_BY_STATUS = {
    DialStatus.ANSWER: OriginateReason.ANSWERED,
    DialStatus.BUSY: OriginateReason.BUSY,
    DialStatus.NOANSWER: OriginateReason.RING_TIMEOUT,
    DialStatus.CONGESTION: OriginateReason.CONGESTION,
    DialStatus.CHANUNAVAIL: OriginateReason.FAILED,
    DialStatus.CANCEL: OriginateReason.HANGUP,
}


def originate_reason(status: str) -> OriginateReason:
    return _REASON_BY_STATUS.get(status, OriginateReason.HANGUP)


_CONGESTION_CAUSES = {34, 38, 41, 42, 44}


def dial_status_for_cause(cause: int) -> str:
    """The DialStatus a caller's Dial() reports when the callee fails with ``cause``."""
    if cause in (USER_BUSY, CALL_REJECTED):
        return DialStatus.BUSY
    if cause in (NO_USER_RESPONSE, NO_ANSWER):
        return DialStatus.NOANSWER
    if cause in _CONGESTION_CAUSES:
        return DialStatus.CONGESTION
    return DialStatus.CHANUNAVAIL
