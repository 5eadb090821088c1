"""Identifiers the originator gives AMI actions, and their decoding on the event side.

Asterisk echoes an Originate's ``ActionID`` in the ``OriginateResponse`` event it broadcasts to every
manager session, but that event carries no channel variables. So the originator packs the command's
callback, leg, attempt and id into the ActionID, and the AMI producer (a different process, another
manager session) recovers them here to key the ``originate.result`` by ``callback_id``.

``ChannelId`` (the Uniqueid Asterisk gives the new channel) is a digest of the command id: a
redelivered command would ask for the same Uniqueid, which Asterisk refuses while the first channel
exists, and any later event of that channel is traceable to the command.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

PREFIX = "cb"
#: characters an id may contain to travel inside an AMI header (no CR/LF, no separators we split on)
_SAFE = re.compile(r"^[\x21-\x7e]{1,200}$")


@dataclass(frozen=True)
class ActionRef:
    callback_id: str
    leg: str
    attempt: int
    command_id: str


def is_header_safe(value: str) -> bool:
    """True when ``value`` can be written into an AMI header verbatim (printable ASCII, no spaces)."""
    return bool(_SAFE.match(value))


def encode_action_id(ref: ActionRef) -> str:
    """``cb/<callback_id>/<leg>/<attempt>/<command_id>``; the command id goes last, it may contain '/'."""
    return f"{PREFIX}/{ref.callback_id}/{ref.leg}/{ref.attempt}/{ref.command_id}"


def decode_action_id(action_id: str | None) -> ActionRef | None:
    """The reference packed by :func:`encode_action_id`, or None for any other tool's ActionID."""
    if not action_id:
        return None
    parts = action_id.split("/", 4)
    if len(parts) != 5 or parts[0] != PREFIX or not parts[3].isdigit():
        return None
    return ActionRef(callback_id=parts[1], leg=parts[2], attempt=int(parts[3]), command_id=parts[4])


def channel_id_for(command_id: str) -> str:
    """Deterministic Asterisk Uniqueid for the channel an Originate creates."""
    return "cbo-" + hashlib.sha256(command_id.encode()).hexdigest()[:32]
