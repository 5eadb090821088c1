"""Asterisk 18 manager events, field for field: pure functions from channel state to headers.

Field names and their order follow ``manager_channels.c`` / ``manager_bridges.c`` /
``manager.c`` of Asterisk 13-18, checked against the real transcripts in
``fixtures/asterisk-ami`` (see ``tests/unit/test_pbx_sim_fixtures.py``):

* every event starts ``Event``, ``Privilege`` (``<class>,all``), optional ``Timestamp``
  (manager.conf ``timestampevents``) and ``SystemName``;
* a channel is described by the snapshot block ``Channel`` ... ``Linkedid`` followed by one
  ``ChanVariable: NAME=value`` line per manager.conf ``channelvars`` entry (empty value
  when unset). The second channel of DialBegin/DialEnd uses the same block prefixed
  ``Dest`` (``DestChanVariable: ...``); Originate's own dial has no caller, so those events
  carry only the ``Dest`` block, exactly as in the fixture of an originated call;
* OriginateResponse is raised the pre-stasis way (``ast_manager_event_multichan``), so its
  channel variables read ``ChanVariable(<channel name>): NAME=value``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from infra.pbx_sim.causes import cause_text
from infra.pbx_sim.channels import Bridge, Channel
from infra.pbx_sim.protocol import Header

UNKNOWN = "<unknown>"


@dataclass(frozen=True)
class Event:
    """An event as Asterisk raises it: class (for the event mask), name, body, virtual time."""

    name: str
    category: str
    body: tuple[Header, ...]
    at: float = 0.0

    def headers(self, system_name: str = "", timestamp: bool = False) -> list[Header]:
        out: list[Header] = [("Event", self.name), ("Privilege", f"{self.category},all")]
        if timestamp:
            out.append(("Timestamp", f"{self.at:.6f}"))
        if system_name:
            out.append(("SystemName", system_name))
        out.extend(self.body)
        return out

    def get(self, key: str) -> str | None:
        for name, value in self.body:
            if name == key:
                return value
        return None


def channel_block(ch: Channel, channelvars: Sequence[str], prefix: str = "") -> list[Header]:
    """``ast_manager_build_channel_state_string_prefix``: the snapshot of one channel."""
    block: list[Header] = [
        (f"{prefix}Channel", ch.name),
        (f"{prefix}ChannelState", str(int(ch.state))),
        (f"{prefix}ChannelStateDesc", ch.state.desc),
        (f"{prefix}CallerIDNum", ch.caller_num or UNKNOWN),
        (f"{prefix}CallerIDName", ch.caller_name or UNKNOWN),
        (f"{prefix}ConnectedLineNum", ch.connected_num or UNKNOWN),
        (f"{prefix}ConnectedLineName", ch.connected_name or UNKNOWN),
        (f"{prefix}Language", ch.language),
        (f"{prefix}AccountCode", ch.accountcode),
        (f"{prefix}Context", ch.context),
        (f"{prefix}Exten", ch.exten),
        (f"{prefix}Priority", str(ch.priority)),
        (f"{prefix}Uniqueid", ch.uniqueid),
        (f"{prefix}Linkedid", ch.linkedid),
    ]
    block.extend((f"{prefix}ChanVariable", f"{var}={ch.get_var(var) or ''}") for var in channelvars)
    return block


def bridge_block(bridge: Bridge) -> list[Header]:
    """``ast_manager_build_bridge_state_string_prefix``."""
    return [
        ("BridgeUniqueid", bridge.uniqueid),
        ("BridgeType", bridge.bridge_type),
        ("BridgeTechnology", bridge.technology),
        ("BridgeCreator", bridge.creator or UNKNOWN),
        ("BridgeName", bridge.name or UNKNOWN),
        ("BridgeNumChannels", str(len(bridge.members))),
        ("BridgeVideoSourceMode", bridge.video_source_mode),
    ]


class EventBuilder:
    """Builds every event the simulator raises; holds only the ``channelvars`` setting."""

    def __init__(self, channelvars: Sequence[str] = ()) -> None:
        self.channelvars = tuple(channelvars)

    def _chan(self, ch: Channel, prefix: str = "") -> list[Header]:
        return channel_block(ch, self.channelvars, prefix)

    @staticmethod
    def _event(name: str, category: str, body: Iterable[Header], at: float) -> Event:
        return Event(name, category, tuple(body), at)

    def newchannel(self, ch: Channel, at: float) -> Event:
        return self._event("Newchannel", "call", self._chan(ch), at)

    def newstate(self, ch: Channel, at: float) -> Event:
        return self._event("Newstate", "call", self._chan(ch), at)

    def new_callerid(self, ch: Channel, at: float) -> Event:
        body = [*self._chan(ch), ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")]
        return self._event("NewCallerid", "call", body, at)

    def hangup(self, ch: Channel, cause: int, at: float) -> Event:
        body = [*self._chan(ch), ("Cause", str(cause)), ("Cause-txt", cause_text(cause))]
        return self._event("Hangup", "call", body, at)

    def soft_hangup_request(self, ch: Channel, cause: int | None, at: float) -> Event:
        body = self._chan(ch)
        if cause is not None:
            body.append(("Cause", str(cause)))
        return self._event("SoftHangupRequest", "call", body, at)

    def var_set(self, ch: Channel, variable: str, value: str, at: float) -> Event:
        body = [*self._chan(ch), ("Variable", variable), ("Value", value)]
        return self._event("VarSet", "dialplan", body, at)

    def newexten(self, ch: Channel, application: str, app_data: str, at: float) -> Event:
        body = [*self._chan(ch), ("Extension", ch.exten), ("Application", application), ("AppData", app_data)]
        return self._event("Newexten", "dialplan", body, at)

    def dial_begin(self, caller: Channel | None, dest: Channel, dial_string: str, at: float) -> Event:
        body = self._chan(caller) if caller is not None else []
        body += [*self._chan(dest, "Dest"), ("DialString", dial_string)]
        return self._event("DialBegin", "call", body, at)

    def dial_end(self, caller: Channel | None, dest: Channel, status: str, at: float) -> Event:
        body = self._chan(caller) if caller is not None else []
        body += [*self._chan(dest, "Dest"), ("DialStatus", status)]
        return self._event("DialEnd", "call", body, at)

    def local_bridge(
        self, one: Channel, two: Channel, context: str, exten: str, optimize: bool, at: float
    ) -> Event:
        body = [
            *self._chan(one, "LocalOne"),
            *self._chan(two, "LocalTwo"),
            ("Context", context),
            ("Exten", exten),
            ("LocalOptimization", "Yes" if optimize else "No"),
        ]
        return self._event("LocalBridge", "call", body, at)

    def bridge_create(self, bridge: Bridge, at: float) -> Event:
        return self._event("BridgeCreate", "call", bridge_block(bridge), at)

    def bridge_destroy(self, bridge: Bridge, at: float) -> Event:
        return self._event("BridgeDestroy", "call", bridge_block(bridge), at)

    def bridge_enter(self, bridge: Bridge, ch: Channel, at: float) -> Event:
        return self._event("BridgeEnter", "call", [*bridge_block(bridge), *self._chan(ch)], at)

    def bridge_leave(self, bridge: Bridge, ch: Channel, at: float) -> Event:
        return self._event("BridgeLeave", "call", [*bridge_block(bridge), *self._chan(ch)], at)

    def user_event(self, ch: Channel, name: str, headers: Iterable[Header], at: float) -> Event:
        """``UserEvent(name,Key: value,...)`` from the dialplan: snapshot, ``UserEvent``, custom headers."""
        return self._event("UserEvent", "user", [*self._chan(ch), ("UserEvent", name), *headers], at)

    def originate_response(
        self,
        *,
        action_id: str | None,
        success: bool,
        channel_name: str,
        context: str | None,
        exten: str | None,
        application: str | None,
        data: str,
        reason: int,
        uniqueid: str,
        caller_num: str,
        caller_name: str,
        channel: Channel | None,
        at: float,
    ) -> Event:
        body: list[Header] = []
        if action_id:
            body.append(("ActionID", action_id))
        body += [("Response", "Success" if success else "Failure"), ("Channel", channel_name)]
        if application:
            body += [("Application", application), ("Data", data)]
        else:
            body += [("Context", context or ""), ("Exten", exten or "")]
        body += [
            ("Reason", str(reason)),
            ("Uniqueid", uniqueid),
            ("CallerIDNum", caller_num or UNKNOWN),
            ("CallerIDName", caller_name or UNKNOWN),
        ]
        if channel is not None:
            body.extend(
                (f"ChanVariable({channel.name})", f"{var}={channel.get_var(var) or ''}")
                for var in self.channelvars
            )
        return self._event("OriginateResponse", "call", body, at)

    def core_show_channel(self, ch: Channel, action_id: str | None, at: float) -> list[Header]:
        """One entry of the CoreShowChannels list: sent to the asking session only, no Privilege."""
        seconds = max(0, int(at - ch.created_at))
        duration = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        headers: list[Header] = [("Event", "CoreShowChannel")]
        if action_id is not None:
            headers.append(("ActionID", action_id))
        headers += self._chan(ch)
        headers += [
            ("Application", ch.application),
            ("ApplicationData", ch.app_data),
            ("Duration", duration),
            ("BridgeId", ch.bridge.uniqueid if ch.bridge is not None else ""),
        ]
        return headers

    @staticmethod
    def shutdown(at: float) -> Event:
        return Event("Shutdown", "system", (("Shutdown", "Cleanly"), ("Restart", "False")), at)
