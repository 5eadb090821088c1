"""Reading Asterisk AMI headers the way real servers write them.

Small pure helpers shared by the translator and the originator: phone-number normalisation
(``<unknown>``, ``+31...``, empty), channel-variable parsing in all three formats Asterisk has used,
and the ``Timestamp`` / ``Uniqueid`` clocks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: What a header value looks like after parsing: a string, or a list when the header repeats
#: (panoramisk turns repeated headers such as ``ChanVariable`` into a list).
HeaderValue = str | list[str]
AmiEvent = Mapping[str, Any]

#: The channel variables the originator sets and ``manager.conf`` ``channelvars=`` must list.
CALLBACK_VARS = ("CALLBACK_ID", "LEG", "ATTEMPT")

_NO_NUMBER = {"", "<unknown>", "unknown", "anonymous", "<null>", "(null)"}
_UNIQUEID_EPOCH = re.compile(r"(?:^|-)(\d{9,11})\.\d+$")


def header(event: AmiEvent, name: str) -> str | None:
    """A header as a single string (the last one when it repeats); None when absent or ``<null>``."""
    value = event.get(name)
    if isinstance(value, list):
        value = value[-1] if value else None
    if value is None:
        return None
    text = str(value)
    return None if text in ("", "<null>", "(null)") else text


def normalize_number(raw: str | None) -> str | None:
    """Digits-only E.164-ish number, or None for ``<unknown>``/empty/withheld/non-numeric caller IDs.

    Carriers send ``+2348031234567``, ``2348031234567`` or ``00 234 ...`` style numbers; the pipeline
    keys tariffs and devices by digits only. ``<unknown>`` is Asterisk's "no caller ID".
    """
    if raw is None:
        return None
    text = raw.strip()
    if text.lower() in _NO_NUMBER:
        return None
    if text.startswith("+"):
        text = text[1:]
    text = text.replace(" ", "").replace("-", "")
    if not text.isdigit() or not 1 <= len(text) <= 20:
        return None
    return text


def channel_variables(event: AmiEvent, prefix: str = "") -> dict[str, str]:
    """The callback variables of a channel from its ``ChanVariable`` headers.

    Asterisk has written them three ways, all accepted:

    * ``ChanVariable(CALLBACK_ID): cb-1`` (the variable name in the parentheses);
    * ``ChanVariable(SIP/foo-0001): CALLBACK_ID=cb-1`` (Asterisk 1.8/11: the channel in parentheses);
    * ``ChanVariable: CALLBACK_ID=cb-1``, repeated once per variable (Asterisk 12+).

    ``prefix`` selects e.g. ``DestChanVariable`` on DialBegin/DialEnd. Only ``CALLBACK_VARS`` are
    returned (upper-cased names), so a carrier's other channelvars do not leak into events.
    """
    base = f"{prefix}ChanVariable"
    found: dict[str, str] = {}
    for key, value in event.items():
        if not key.lower().startswith(base.lower()):
            continue
        rest = key[len(base) :]
        values = value if isinstance(value, list) else [value]
        if rest.startswith("(") and rest.endswith(")"):
            inner = rest[1:-1]
            if "/" in inner:  # 1.8 format: the channel name in the parentheses
                pairs = [str(v).split("=", 1) for v in values if "=" in str(v)]
            else:
                pairs = [[inner, str(v)] for v in values]
        elif rest == "":
            pairs = [str(v).split("=", 1) for v in values if "=" in str(v)]
        else:
            continue
        for name, val in pairs:
            upper = name.strip().upper()
            if upper.startswith("__"):
                upper = upper[2:]
            elif upper.startswith("_"):
                upper = upper[1:]
            if upper in CALLBACK_VARS and val.strip():
                found[upper] = val.strip()
    return found


def event_timestamp(event: AmiEvent) -> datetime | None:
    """``Timestamp: 1530278036.123456`` (manager.conf ``timestampevents=yes``) as an aware UTC datetime."""
    raw = header(event, "Timestamp")
    if raw is None:
        return None
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def uniqueid_epoch(uniqueid: str | None) -> int | None:
    """Creation second Asterisk writes into a Uniqueid: ``<system>-<epoch>.<seq>`` or ``<epoch>.<seq>``."""
    if not uniqueid:
        return None
    match = _UNIQUEID_EPOCH.search(uniqueid)
    return int(match.group(1)) if match else None
