"""Q.850 hangup causes and their SIP responses, as data.

``CALLBACK_HANGUP_CAUSES`` is the seed's list: the 15 causes a Callback Dial Plan may drop the
initiation call with (MOR 10+). ``sip_for_q850`` maps any cause the PBX reports to a SIP response,
seed table first, then the usual RFC 3398 mapping for the common causes outside it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HangupCause:
    q850: int
    q850_text: str
    sip_code: int
    sip_text: str


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

BY_Q850: dict[int, HangupCause] = {c.q850: c for c in CALLBACK_HANGUP_CAUSES}

#: Causes outside the seed's table that PBXes commonly report (RFC 3398 section 7.2.4.1). 16 (normal
#: clearing) has no SIP error response: the call ended normally.
_OTHER_Q850_TO_SIP: dict[int, int] = {
    34: 503,
    38: 503,
    41: 503,
    42: 503,
    44: 503,
    47: 503,
    55: 403,
    57: 403,
    58: 503,
    65: 488,
    69: 501,
    79: 501,
    87: 403,
    88: 503,
    102: 504,
    111: 500,
    127: 500,
}


def sip_for_q850(cause: int) -> int | None:
    """SIP response code for a Q.850 cause, or None when the cause is a normal clearing (16) or unknown."""
    known = BY_Q850.get(cause)
    if known is not None:
        return known.sip_code
    return _OTHER_Q850_TO_SIP.get(cause)


def is_callback_hangup_cause(cause: int) -> bool:
    return cause in BY_Q850
