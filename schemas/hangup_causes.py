"""Q.850 hangup causes and their SIP responses, as data: the project's one list of them.

``Q850_CAUSES`` is every cause a PBX may report: the cause values ITU-T Q.850 defines, plus 0,
which Asterisk reports when it has no cause. Each carries its text and the SIP response RFC 3398
(section 7.2.4.1) maps it to, or none. ``CALLBACK_HANGUP_CAUSES`` is the seed's list among them: the
15 causes a Callback Dial Plan may drop the initiation call with (MOR 10+). ``sip_for_q850`` maps a
reported cause to its SIP response. ClickHouse holds the same rows in ``callback.hangup_causes``
(docs/analytics.md); a unit test keeps that table's migration equal to ``Q850_CAUSES``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HangupCause:
    q850: int
    q850_text: str
    #: None when RFC 3398 maps the cause to no SIP error response (16, normal clearing, ends the
    #: call with a BYE) or does not list it
    sip_code: int | None
    sip_text: str = ""


CALLBACK_HANGUP_CAUSES: tuple[HangupCause, ...] = (
    HangupCause(1, "unallocated number", 404, "Not Found"),
    HangupCause(2, "no route to network", 404, "Not Found"),
    HangupCause(3, "no route to destination", 404, "Not Found"),
    HangupCause(17, "user busy", 486, "Busy here"),
    HangupCause(18, "no user responding", 408, "Request Timeout"),
    HangupCause(19, "no answer from the user", 480, "Temporarily unavailable"),
    HangupCause(20, "subscriber absent", 480, "Temporarily unavailable"),
    HangupCause(21, "call rejected", 403, "Forbidden"),
    HangupCause(22, "number changed (w/ diagnostic)", 301, "Moved Permanently"),
    HangupCause(23, "redirection to new destination", 410, "Gone"),
    HangupCause(26, "non-selected user clearing", 404, "Not Found"),
    HangupCause(27, "destination out of order", 502, "Bad Gateway"),
    HangupCause(28, "address incomplete", 484, "Address incomplete"),
    HangupCause(29, "facility rejected", 501, "Not implemented"),
    HangupCause(31, "normal unspecified", 480, "Temporarily unavailable"),
)

_UNAVAILABLE = "Service unavailable"

#: The causes outside the seed's table. 44 and 69 are not in RFC 3398's table either: they keep the
#: response the other causes of their class get there (503 for "resource unavailable", 501 for
#: "service or option not implemented"), as this project has always answered them.
_OTHER_CAUSES: tuple[HangupCause, ...] = (
    HangupCause(0, "not defined (no cause given)", None),
    HangupCause(4, "send special information tone", None),
    HangupCause(5, "misdialled trunk prefix", None),
    HangupCause(6, "channel unacceptable", None),
    HangupCause(7, "call awarded and being delivered in an established channel", None),
    HangupCause(8, "preemption", None),
    HangupCause(9, "preemption, circuit reserved for reuse", None),
    HangupCause(14, "ported number", None),
    HangupCause(16, "normal call clearing", None),
    HangupCause(24, "call rejected due to a feature at the destination", None),
    HangupCause(25, "exchange routing error", None),
    HangupCause(30, "response to status enquiry", None),
    HangupCause(34, "no circuit available", 503, _UNAVAILABLE),
    HangupCause(38, "network out of order", 503, _UNAVAILABLE),
    HangupCause(39, "permanent frame mode connection out of service", None),
    HangupCause(40, "permanent frame mode connection operational", None),
    HangupCause(41, "temporary failure", 503, _UNAVAILABLE),
    HangupCause(42, "switching equipment congestion", 503, _UNAVAILABLE),
    HangupCause(43, "access information discarded", None),
    HangupCause(44, "requested circuit or channel not available", 503, _UNAVAILABLE),
    HangupCause(46, "precedence call blocked", None),
    HangupCause(47, "resource unavailable", 503, _UNAVAILABLE),
    HangupCause(49, "quality of service not available", None),
    HangupCause(50, "requested facility not subscribed", None),
    HangupCause(53, "outgoing calls barred within CUG", None),
    HangupCause(55, "incoming calls barred within CUG", 403, "Forbidden"),
    HangupCause(57, "bearer capability not authorized", 403, "Forbidden"),
    HangupCause(58, "bearer capability not presently available", 503, _UNAVAILABLE),
    HangupCause(62, "inconsistency in outgoing access information and subscriber class", None),
    HangupCause(63, "service or option not available", None),
    HangupCause(65, "bearer capability not implemented", 488, "Not Acceptable Here"),
    HangupCause(66, "channel type not implemented", None),
    HangupCause(69, "requested facility not implemented", 501, "Not implemented"),
    HangupCause(70, "only restricted digital bearer capability available", 488, "Not Acceptable Here"),
    HangupCause(79, "service or option not implemented", 501, "Not implemented"),
    HangupCause(81, "invalid call reference value", None),
    HangupCause(82, "identified channel does not exist", None),
    HangupCause(83, "a suspended call exists, but not this call identity", None),
    HangupCause(84, "call identity in use", None),
    HangupCause(85, "no call suspended", None),
    HangupCause(86, "call with the requested call identity has been cleared", None),
    HangupCause(87, "user not member of CUG", 403, "Forbidden"),
    HangupCause(88, "incompatible destination", 503, _UNAVAILABLE),
    HangupCause(90, "non-existent CUG", None),
    HangupCause(91, "invalid transit network selection", None),
    HangupCause(95, "invalid message", None),
    HangupCause(96, "mandatory information element missing", None),
    HangupCause(97, "message type non-existent or not implemented", None),
    HangupCause(98, "message not compatible with call state, or message type not implemented", None),
    HangupCause(99, "information element or parameter non-existent or not implemented", None),
    HangupCause(100, "invalid information element contents", None),
    HangupCause(101, "message not compatible with call state", None),
    HangupCause(102, "recovery on timer expiry", 504, "Gateway timeout"),
    HangupCause(103, "parameter non-existent or not implemented, passed on", None),
    HangupCause(110, "message with unrecognized parameter discarded", None),
    HangupCause(111, "protocol error", 500, "Server internal error"),
    HangupCause(127, "interworking unspecified", 500, "Server internal error"),
)

#: Every cause a PBX may report, by cause value: the seed's 15 and the others.
Q850_CAUSES: tuple[HangupCause, ...] = tuple(
    sorted(CALLBACK_HANGUP_CAUSES + _OTHER_CAUSES, key=lambda c: c.q850)
)

BY_Q850: dict[int, HangupCause] = {c.q850: c for c in CALLBACK_HANGUP_CAUSES}
_ALL_BY_Q850: dict[int, HangupCause] = {c.q850: c for c in Q850_CAUSES}


def sip_for_q850(cause: int) -> int | None:
    """SIP response code for a Q.850 cause, or None when the cause is a normal clearing (16), has
    no response in RFC 3398, or is not a cause at all."""
    known = _ALL_BY_Q850.get(cause)
    return None if known is None else known.sip_code


def is_callback_hangup_cause(cause: int) -> bool:
    return cause in BY_Q850
