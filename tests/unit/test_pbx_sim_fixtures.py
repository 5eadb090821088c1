"""The simulator's events against real Asterisk transcripts (``tests/fixtures/asterisk-ami``).

For every event type the simulator emits that also appears in the transcripts, each
distinct header set the simulator produces must equal the header set of some real event
of that type. The transcripts store events as JSON objects with sorted keys, so header
*order* cannot be taken from them; it is checked against the order of Asterisk's
``manager_channels.c`` / ``manager_bridges.c`` instead.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from infra.pbx_sim.actions import ActionContext, Session, dispatch
from infra.pbx_sim.causes import ChannelState, cause_text
from infra.pbx_sim.clock import ManualScheduler
from infra.pbx_sim.events import Event
from infra.pbx_sim.pbx import OriginateRequest, Pbx
from infra.pbx_sim.protocol import Header, Message
from infra.pbx_sim.scenario import parse_scenario

#: the real Asterisk transcripts are part of the repository (tests/fixtures/asterisk-ami/README.md)
FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "asterisk-ami"

#: a header of the capture library, not of Asterisk
CAPTURE_ARTIFACTS = {"content"}
#: headers Asterisk 18 sends that the (Asterisk 13) transcripts predate
ASTERISK_18_ADDITIONS = {"FullyBooted": {"Uptime", "LastReload"}}

CHANNEL_BLOCK = [
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
]
BRIDGE_BLOCK = [
    "BridgeUniqueid",
    "BridgeType",
    "BridgeTechnology",
    "BridgeCreator",
    "BridgeName",
    "BridgeNumChannels",
    "BridgeVideoSourceMode",
]
SYSTEM_NAME = "pbx-sim"


def fixture_events() -> list[dict[str, str]]:
    assert FIXTURE_DIR is not None
    events: list[dict[str, str]] = []
    for path in sorted(FIXTURE_DIR.glob("*.json")):
        events.extend(json.loads(path.read_text()))
    return events


def rendered(event: Event) -> list[Header]:
    return event.headers(SYSTEM_NAME)


def simulated_events(channelvars: tuple[str, ...] = ()) -> list[list[Header]]:
    """A session that makes the simulator emit every kind of event it has."""
    data = {
        "pbx": {"channelvars": list(channelvars)},
        "subscribers": {"111": {"pin": "1234"}, "222": {"talk_seconds": 3}, "333": {"outcome": "busy"}},
    }
    scheduler = ManualScheduler()
    events: list[Event] = []
    pbx = Pbx(parse_scenario(data), scheduler, events.append)
    pbx.originate(OriginateRequest("PJSIP/111@carrier", "callback-a", "s", channel_id="a1", action_id="x"))
    scheduler.advance(5)
    pbx.redirect("a1", "callback-pin", "s", 1)
    scheduler.advance(5)
    pbx.set_var("a1", "CALLERID(num)", "5000")
    pbx.redirect("a1", "callback-dial-b", "222", 1)
    scheduler.run_until_idle()
    pbx.originate(OriginateRequest("Local/333@callback-out", "callback-a", "s"))
    inbound = pbx.start_inbound("37060000001", "37052000100")
    pbx.hangup(inbound.name, 21)
    scheduler.run_until_idle()

    session = Session(peer="test")
    ctx = ActionContext(session, pbx, {"u": "s"}, lambda: 12.0, lambda _h: None)
    login = dispatch(ctx, Message.of(("Action", "Login"), ("Username", "u"), ("Secret", "s")))
    return [*login.replies[1:], *(rendered(e) for e in events)]


def test_every_simulated_event_has_the_header_set_of_a_real_one() -> None:
    real: dict[str, list[set[str]]] = defaultdict(list)
    for event in fixture_events():
        real[event["Event"]].append(set(event) - CAPTURE_ARTIFACTS)
    simulated: dict[str, list[set[str]]] = defaultdict(list)
    for headers in simulated_events():
        name = dict(headers)["Event"]
        keys = {k for k, _ in headers} - ASTERISK_18_ADDITIONS.get(name, set())
        if keys not in simulated[name]:
            simulated[name].append(keys)

    compared = set()
    for name, variants in simulated.items():
        if name not in real:
            continue  # VarSet, Newexten, SoftHangupRequest, OriginateResponse: not in the transcripts
        compared.add(name)
        for keys in variants:
            if name == "UserEvent":  # custom headers differ by design; compare the standard part
                standard = set(CHANNEL_BLOCK) | {"Event", "Privilege", "SystemName", "UserEvent"}
                assert keys & standard in [r & standard for r in real[name]]
                continue
            assert keys in real[name], f"{name}: {sorted(keys)} matches no real {name}"
    assert compared >= {
        "FullyBooted",
        "Newchannel",
        "Newstate",
        "NewCallerid",
        "DialBegin",
        "DialEnd",
        "LocalBridge",
        "BridgeCreate",
        "BridgeEnter",
        "BridgeLeave",
        "BridgeDestroy",
        "Hangup",
        "UserEvent",
    }


def test_originate_dials_have_no_caller_like_the_real_click_to_dial() -> None:
    ours = [dict(h) for h in simulated_events() if dict(h)["Event"] in ("DialBegin", "DialEnd")]
    assert any("Channel" not in e and "DestChannel" in e for e in ours)
    real = [e for e in fixture_events() if e["Event"] == "DialBegin" and "Channel" not in e]
    assert real, "the transcripts show an Originate's DialBegin without Channel"


def test_privilege_per_event_type_matches_asterisk() -> None:
    real = {e["Event"]: e["Privilege"] for e in fixture_events()}
    for headers in simulated_events():
        event = dict(headers)
        if event["Event"] in real:
            assert event["Privilege"] == real[event["Event"]], event["Event"]


def test_states_and_causes_are_spelt_like_asterisk() -> None:
    for event in fixture_events():
        if "ChannelState" in event:
            assert ChannelState(int(event["ChannelState"])).desc == event["ChannelStateDesc"]
        if "Cause" in event:
            assert cause_text(int(event["Cause"])) == event["Cause-txt"]


def test_header_order_follows_asterisk_source() -> None:
    for headers in simulated_events(channelvars=("CALLBACK_ID", "LEG")):
        keys = [k for k, _ in headers]
        name = keys and dict(headers)["Event"]
        assert keys[:2] == ["Event", "Privilege"], name
        if name == "FullyBooted":
            assert keys == ["Event", "Privilege", "Uptime", "LastReload", "Status"]
            continue
        assert keys[2] == "SystemName", name
        if name.startswith("Bridge"):
            assert keys[3:10] == BRIDGE_BLOCK, name
        if "Channel" in keys and name != "OriginateResponse":
            start = keys.index("Channel")
            assert keys[start : start + len(CHANNEL_BLOCK) + 2] == [
                *CHANNEL_BLOCK,
                "ChanVariable",
                "ChanVariable",
            ]
        if "DestChannel" in keys:
            start = keys.index("DestChannel")
            dest = [f"Dest{k}" for k in CHANNEL_BLOCK]
            assert keys[start : start + len(dest) + 2] == [*dest, "DestChanVariable", "DestChanVariable"], (
                name
            )
            if "Channel" in keys:
                assert keys.index("Channel") < start  # the caller block comes first
        if name == "Hangup":
            assert keys[-2:] == ["Cause", "Cause-txt"]
        if name == "DialEnd":
            assert keys[-1] == "DialStatus"
        if name == "DialBegin":
            assert keys[-1] == "DialString"


def test_originate_response_carries_channel_vars_the_pre_stasis_way() -> None:
    (resp,) = [h for h in simulated_events(("CALLBACK_ID",)) if dict(h)["Event"] == "OriginateResponse"][:1]
    keys = [k for k, _ in resp]
    assert keys == [
        "Event",
        "Privilege",
        "SystemName",
        "ActionID",
        "Response",
        "Channel",
        "Context",
        "Exten",
        "Reason",
        "Uniqueid",
        "CallerIDNum",
        "CallerIDName",
        "ChanVariable(PJSIP/carrier-00000001)",
    ]
