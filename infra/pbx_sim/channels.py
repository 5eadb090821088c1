"""Channel and bridge state, dial-string parsing and Asterisk-style identifiers.

Plain data plus the naming rules Asterisk uses, so the call engine (``calls.py``) stays
about behaviour and the event builders (``events.py``) about field layout:

* channel names ``PJSIP/carrier-0000002a``, ``Local/123@ctx-0000002b;1`` (a global
  8-hex-digit sequence, as ``ast_channel_alloc`` does);
* Uniqueid ``<systemname>-<epoch>.<seq>`` as Asterisk builds it when ``systemname`` is set;
* bridges with a UUID ``BridgeUniqueid``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from infra.pbx_sim.causes import ChannelState
from infra.pbx_sim.clock import Timer


@dataclass(frozen=True)
class DialTarget:
    """A parsed ``Channel`` of Originate or a Dial() string.

    ``number`` is what decides the scenario behaviour; ``name_prefix`` is the part of the
    channel name before ``-<seq>``; for ``Local`` channels ``context`` is where the ;2 half
    runs and ``dial_string`` is what Asterisk reports as ``DialString``.
    """

    tech: str
    number: str
    name_prefix: str
    dial_string: str
    context: str | None = None
    local_options: str = ""

    @property
    def is_local(self) -> bool:
        return self.tech.lower() == "local"


class InvalidChannel(ValueError):
    pass


def parse_dial_target(channel: str) -> DialTarget:
    """``PJSIP/123@trunk``, ``SIP/trunk/123``, ``SIP/123``, ``Local/123@ctx/n`` -> :class:`DialTarget`."""
    tech, sep, rest = channel.partition("/")
    if not sep or not tech or not rest:
        raise InvalidChannel(f"Invalid channel: {channel}")
    if tech.lower() == "local":
        body, _, options = rest.partition("/")
        number, at, context = body.partition("@")
        if not number:
            raise InvalidChannel(f"Invalid channel: {channel}")
        context = context if at and context else "default"
        return DialTarget(
            tech="Local",
            number=number,
            name_prefix=f"Local/{number}@{context}",
            dial_string=rest,
            context=context,
            local_options=options,
        )
    if "@" in rest:  # PJSIP/NUMBER@endpoint
        number, _, resource = rest.partition("@")
        resource = resource.split("/", 1)[0]
    elif "/" in rest:  # SIP/peer/NUMBER, IAX2/peer/NUMBER, DAHDI/g1/NUMBER
        resource, _, number = rest.partition("/")
    else:  # SIP/NUMBER: the peer is the number
        resource = number = rest
    if not number or not resource:
        raise InvalidChannel(f"Invalid channel: {channel}")
    return DialTarget(tech=tech, number=number, name_prefix=f"{tech}/{resource}", dial_string=rest)


def parse_caller_id(value: str | None) -> tuple[str, str]:
    """``"Name" <num>`` / ``Name <num>`` / ``num`` -> (num, name), like ``ast_callerid_parse``."""
    if not value:
        return "", ""
    text = value.strip()
    if "<" in text and text.endswith(">"):
        name, _, number = text[:-1].rpartition("<")
        return number.strip(), name.strip().strip('"').strip()
    if any(ch.isdigit() for ch in text) and all(ch.isdigit() or ch in "+*#" for ch in text):
        return text, ""
    return "", text.strip('"')


def variable_base(name: str) -> str:
    """``__FOO`` / ``_FOO`` -> ``FOO``: inheritance prefixes are not part of the name lookups use."""
    return name.lstrip("_") if name.startswith("_") else name


class Role(Enum):
    """Why a channel exists; decides what the subscriber behind it can do to it."""

    ORIGINATED = "originated"  # created by Originate (direct tech)
    LOCAL_ONE = "local1"  # ;1 half of an originated Local channel (the one the client sees)
    LOCAL_TWO = "local2"  # ;2 half, runs the dialplan that dials the trunk
    OUTBOUND = "outbound"  # created by a Dial() (trunk leg of a Local, or leg B)
    INBOUND = "inbound"  # initiation call from the network


@dataclass(eq=False)
class Bridge:
    uniqueid: str
    members: list[Channel] = field(default_factory=list)
    technology: str = "simple_bridge"
    bridge_type: str = "basic"
    creator: str = ""
    name: str = ""
    video_source_mode: str = "none"


@dataclass(eq=False)
class Channel:
    """Mutable snapshot source for one channel; events copy its fields when they are built."""

    name: str
    uniqueid: str
    linkedid: str
    role: Role
    party: str  # the subscriber number whose scenario drives this channel
    state: ChannelState = ChannelState.DOWN
    caller_num: str = ""
    caller_name: str = ""
    connected_num: str = ""
    connected_name: str = ""
    language: str = "en"
    accountcode: str = ""
    context: str = "default"
    exten: str = "s"
    priority: int = 1
    variables: dict[str, str] = field(default_factory=dict)
    hungup: bool = False
    bridge: Bridge | None = None
    local_peer: Channel | None = None
    #: outgoing Dial() this channel is waiting on (the channel is the caller)
    dialing: Channel | None = None
    #: the channel whose Dial() created this one (None for Originate's pseudo caller)
    dialed_by: Channel | None = None
    #: DialStatus the dialler of this channel saw (set when the dial ended)
    dial_status: str | None = None
    timers: list[Timer] = field(default_factory=list)
    #: hooks run just before the Hangup event is raised (e.g. Originate's DialEnd) ...
    before_hangup: list[Callable[[Channel, int], None]] = field(default_factory=list)
    #: ... and just after it (e.g. OriginateResponse, continuing a dialplan after Dial())
    after_hangup: list[Callable[[Channel, int], None]] = field(default_factory=list)
    #: how many times each IVR prompt played on this channel (drives repeated PIN attempts)
    prompt_count: dict[str, int] = field(default_factory=dict)
    #: dialplan application running now, and since when the channel exists (CoreShowChannels)
    application: str = ""
    app_data: str = ""
    created_at: float = 0.0

    def get_var(self, name: str) -> str | None:
        wanted = variable_base(name)
        for key in reversed(self.variables):
            if variable_base(key) == wanted:
                return self.variables[key]
        return None

    def set_var(self, name: str, value: str) -> None:
        self.variables[name] = value

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


class Ids:
    """Issues channel names, Uniqueids and bridge ids the way Asterisk formats them."""

    def __init__(self, system_name: str, now: Callable[[], float]) -> None:
        self._system_name = system_name
        self._now = now
        self._chan_seq = itertools.count(1)
        self._uid_seq = itertools.count(1)

    def channel_name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._chan_seq):08x}"

    def local_pair(self, prefix: str) -> tuple[str, str]:
        base = f"{prefix}-{next(self._chan_seq):08x}"
        return f"{base};1", f"{base};2"

    def uniqueid(self) -> str:
        stamp = f"{int(self._now())}.{next(self._uid_seq)}"
        return f"{self._system_name}-{stamp}" if self._system_name else stamp

    @staticmethod
    def bridge_id() -> str:
        return str(uuid.uuid4())
