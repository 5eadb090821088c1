"""The simulated PBX's call engine: scenario + operations -> the exact Asterisk event sequence.

Runs on a manual virtual clock, so every test replays whole calls instantly and can assert
on timings as well as on order.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.pbx_sim.clock import ManualScheduler
from infra.pbx_sim.events import Event
from infra.pbx_sim.pbx import OriginateRequest, OriginateResult, Pbx
from infra.pbx_sim.scenario import parse_scenario

T0 = 1_700_000_000.0

SCENARIO: dict[str, Any] = {
    "subscribers": {
        "111": {"answer_after": 2, "pin": ["0000", "1234"], "destination": "222", "talk_seconds": 30},
        "222": {"answer_after": 3, "talk_seconds": 10},
        "333": {"outcome": "busy", "fail_after": 1},
        "444": {"outcome": "no_answer"},
        "555": {"outcome": "congestion"},
        "666": {"outcome": "unreachable"},
        "777": {"outcome": "unreachable", "hangup_cause": 1},
        "888": {"answer_after": 60},
    }
}


class Harness:
    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.scheduler = ManualScheduler(start=T0)
        self.events: list[Event] = []
        self.pbx = Pbx(parse_scenario(SCENARIO if data is None else data), self.scheduler, self.events.append)

    def originate(self, channel: str, **kw: Any) -> OriginateRequest:
        kw.setdefault("context", "callback-a")
        kw.setdefault("exten", "s")
        kw.setdefault("action_id", "act-1")
        kw.setdefault("channel_id", "cb-1-a")
        kw.setdefault("variables", [("CALLBACK_ID", "cb-1"), ("LEG", "A"), ("ATTEMPT", "1")])
        request = OriginateRequest(channel=channel, **kw)
        self.pbx.originate(request)
        return request

    def names(self, since: int = 0) -> list[str]:
        return [e.name for e in self.events[since:]]

    def of(self, name: str, **fields: str) -> list[Event]:
        return [e for e in self.events if e.name == name and all(e.get(k) == v for k, v in fields.items())]

    def one(self, name: str, **fields: str) -> Event:
        found = self.of(name, **fields)
        assert len(found) == 1, f"{len(found)} {name} events with {fields}: {self.names()}"
        return found[0]

    def trace(self, since: int = 0) -> list[tuple[str, str]]:
        """(event, channel or dest channel) pairs: compact enough to compare whole sequences."""
        return [(e.name, e.get("Channel") or e.get("DestChannel") or "") for e in self.events[since:]]


def chanvars(event: Event, prefix: str = "") -> dict[str, str]:
    return dict(v.split("=", 1) for k, v in event.body if k == f"{prefix}ChanVariable")


def response_of(h: Harness) -> Event:
    return h.one("OriginateResponse")


# --------------------------------------------------------------------------- Originate outcomes


def test_answered_originate_reports_reason_4_with_the_channel_id_as_uniqueid() -> None:
    h = Harness()
    h.originate("PJSIP/111@carrier", caller_id='"Callback" <5000>')
    h.scheduler.run_until(T0 + 10)
    chan = "PJSIP/carrier-00000001"
    assert h.trace()[:10] == [
        ("Newchannel", chan),
        ("VarSet", chan),
        ("VarSet", chan),
        ("VarSet", chan),
        ("DialBegin", chan),
        ("Newstate", chan),
        ("Newstate", chan),
        ("DialEnd", chan),
        ("OriginateResponse", chan),
        ("Newexten", chan),
    ]
    begin = h.one("DialBegin")
    assert begin.get("Channel") is None and begin.get("DialString") == "111@carrier"
    assert h.one("DialEnd").get("DialStatus") == "ANSWER"
    resp = response_of(h)
    assert dict(resp.body) == {
        "ActionID": "act-1",
        "Response": "Success",
        "Channel": chan,
        "Context": "callback-a",
        "Exten": "s",
        "Reason": "4",
        "Uniqueid": "cb-1-a",
        "CallerIDNum": "5000",
        "CallerIDName": "Callback",
        f"ChanVariable({chan})": "ATTEMPT=1",  # dict() keeps the last of the repeated lines
    }
    assert [v for k, v in resp.body if k.startswith("ChanVariable(")] == [
        "CALLBACK_ID=cb-1",
        "LEG=A",
        "ATTEMPT=1",
    ]
    assert resp.at == T0 + 2  # answered after the scenario's 2 s of ringing
    up = h.of("Newstate", ChannelStateDesc="Up")[0]
    assert (up.get("Uniqueid"), up.get("Linkedid"), up.get("CallerIDNum")) == ("cb-1-a", "cb-1-a", "5000")
    assert chanvars(up) == {"CALLBACK_ID": "cb-1", "LEG": "A", "ATTEMPT": "1"}
    a = h.pbx.find("cb-1-a")
    assert a is not None and a.context == "callback-a"


@pytest.mark.parametrize(
    ("number", "status", "cause", "reason", "at"),
    [
        ("333", "BUSY", "17", "5", 1.0),
        ("444", "NOANSWER", "19", "3", 25.0),
        ("555", "CONGESTION", "34", "8", 0.5),
        ("666", "CHANUNAVAIL", "20", "0", 0.5),
        ("777", "CHANUNAVAIL", "1", "0", 0.5),
        ("888", "NOANSWER", "19", "3", 25.0),  # would answer after 60 s, but Timeout is 25 s
    ],
)
def test_failed_originate(number: str, status: str, cause: str, reason: str, at: float) -> None:
    h = Harness()
    h.originate(f"SIP/carrier/{number}", timeout=25.0)
    h.scheduler.run_until_idle()
    chan = "SIP/carrier-00000001"
    assert h.names()[-3:] == ["DialEnd", "Hangup", "OriginateResponse"]
    assert h.one("DialEnd").get("DialStatus") == status
    hangup = h.one("Hangup")
    assert (hangup.get("Channel"), hangup.get("Cause")) == (chan, cause)
    resp = response_of(h)
    assert (resp.get("Response"), resp.get("Reason"), resp.get("Uniqueid")) == ("Failure", reason, "cb-1-a")
    assert resp.at == T0 + at
    assert h.pbx.channels == {}


def test_hanging_up_a_ringing_originate_cancels_it_with_reason_1() -> None:
    h = Harness()
    h.originate("PJSIP/444@carrier")
    h.scheduler.advance(5)
    assert h.pbx.hangup("cb-1-a", None)
    h.scheduler.run_until_idle()
    assert h.names()[-4:] == ["SoftHangupRequest", "DialEnd", "Hangup", "OriginateResponse"]
    assert h.one("DialEnd").get("DialStatus") == "CANCEL"
    assert response_of(h).get("Reason") == "1"


def test_a_channel_id_already_in_use_fails_without_a_channel() -> None:
    h = Harness()
    h.originate("PJSIP/111@carrier")
    h.scheduler.advance(3)
    before = len(h.events)
    h.originate("PJSIP/222@carrier", action_id="act-2")
    assert h.names(before) == ["OriginateResponse"]
    resp = h.events[-1]
    assert (resp.get("Response"), resp.get("Reason"), resp.get("Channel")) == (
        "Failure",
        "0",
        "PJSIP/222@carrier",
    )


def test_sync_originate_result_goes_to_the_callback_only() -> None:
    h = Harness()
    results: list[OriginateResult] = []
    h.pbx.originate(OriginateRequest(channel="PJSIP/333@carrier", is_async=False), results.append)
    h.scheduler.run_until_idle()
    assert [(r.success, int(r.reason)) for r in results] == [(False, 5)]
    assert not h.of("OriginateResponse")


# --------------------------------------------------------------------------- Local channels


def test_local_originate_creates_two_halves_and_dials_the_trunk() -> None:
    h = Harness()
    h.originate("Local/111@callback-out", other_channel_id="cb-1-a2")
    h.scheduler.run_until(T0 + 2)
    one, two = "Local/111@callback-out-00000001;1", "Local/111@callback-out-00000001;2"
    trunk = "PJSIP/carrier-00000002"
    assert h.trace() == [
        ("Newchannel", one),
        ("Newchannel", two),
        ("VarSet", one),
        ("VarSet", one),
        ("VarSet", one),
        ("LocalBridge", ""),
        ("DialBegin", one),
        ("Newexten", two),
        ("Newchannel", trunk),
        ("DialBegin", two),
        ("Newstate", trunk),
        ("Newstate", one),
        ("Newstate", trunk),
        ("DialEnd", two),
        ("Newstate", two),
        ("Newstate", one),
        ("BridgeCreate", ""),
        ("BridgeEnter", trunk),
        ("BridgeEnter", two),
        ("DialEnd", one),
        ("OriginateResponse", one),
        ("Newexten", one),
    ]
    local = h.one("LocalBridge")
    assert (local.get("LocalOneUniqueid"), local.get("LocalTwoUniqueid")) == ("cb-1-a", "cb-1-a2")
    assert local.get("LocalOptimization") == "Yes"
    assert h.of("DialBegin")[0].get("DialString") == "111@callback-out"
    assert h.of("DialBegin")[1].get("DestChannel") == trunk
    assert chanvars(h.of("Newstate", Channel=two)[0])["CALLBACK_ID"] == "cb-1"  # copied to ;2
    assert response_of(h).get("Uniqueid") == "cb-1-a"


def test_local_originate_to_a_busy_number_fails_every_half_with_cause_17() -> None:
    h = Harness()
    h.originate("Local/333@callback-out/n")
    h.scheduler.run_until_idle()
    assert h.trace()[-6:] == [
        ("DialEnd", "Local/333@callback-out-00000001;2"),
        ("Hangup", "PJSIP/carrier-00000002"),
        ("Hangup", "Local/333@callback-out-00000001;2"),
        ("DialEnd", "Local/333@callback-out-00000001;1"),
        ("Hangup", "Local/333@callback-out-00000001;1"),
        ("OriginateResponse", "Local/333@callback-out-00000001;1"),
    ]
    assert {e.get("Cause") for e in h.of("Hangup")} == {"17"}
    assert [e.get("DialStatus") for e in h.of("DialEnd")] == ["BUSY", "BUSY"]
    assert response_of(h).get("Reason") == "5"
    assert h.one("LocalBridge").get("LocalOptimization") == "No"


def test_local_originate_times_out_with_reason_3() -> None:
    h = Harness()
    h.originate("Local/444@callback-out", timeout=20.0)
    h.scheduler.run_until_idle()
    assert response_of(h).get("Reason") == "3"
    assert response_of(h).at == T0 + 20


# --------------------------------------------------------------------------- inbound initiations


def test_inbound_initiation_rings_until_dropped_with_the_dial_plan_cause() -> None:
    h = Harness()
    ch = h.pbx.start_inbound("37060000001", "37052000100")
    h.scheduler.advance(3600)
    assert h.names() == ["Newchannel", "Newstate", "Newexten", "VarSet", "Newexten"]
    new = h.events[0]
    assert (new.get("Channel"), new.get("CallerIDNum"), new.get("Context"), new.get("Exten")) == (
        "PJSIP/carrier-00000001",
        "37060000001",
        "from-trunk",
        "37052000100",
    )
    assert h.events[1].get("ChannelStateDesc") == "Ring"
    assert (h.events[3].get("Variable"), h.events[3].get("Value")) == ("FROM_DID", "37052000100")
    assert h.pbx.hangup(ch.name, 21)
    assert h.names()[-2:] == ["SoftHangupRequest", "Hangup"]
    hangup = h.events[-1]
    assert (hangup.get("Cause"), hangup.get("Cause-txt"), hangup.get("ChannelStateDesc")) == (
        "21",
        "Call Rejected",
        "Ring",
    )
    assert h.events[-2].get("Cause") == "21"


def test_inbound_without_caller_id_shows_unknown_and_caller_can_give_up() -> None:
    h = Harness()
    h.pbx.start_inbound(None, "37052000100", ring_timeout=15)
    h.scheduler.run_until_idle()
    assert h.events[0].get("CallerIDNum") == "<unknown>"
    hangup = h.one("Hangup")
    assert (hangup.get("Cause"), hangup.at) == ("16", T0 + 15)


def test_scheduled_initiations_arrive_at_their_times() -> None:
    h = Harness({"inbound": [{"at": 2, "ani": "1", "did": "9"}, {"at": 5, "did": "9"}]})
    h.pbx.schedule_inbound(h.pbx.scenario.inbound)
    h.scheduler.run_until_idle()
    assert [e.at - T0 for e in h.of("Newchannel")] == [2, 5]


# --------------------------------------------------------------------------- IVR and leg B


def answered_a(h: Harness, number: str = "111") -> str:
    h.originate(f"PJSIP/{number}@carrier")
    h.scheduler.advance(5)
    ch = h.pbx.find("cb-1-a")
    assert ch is not None
    return ch.name


def test_pin_prompt_raises_callback_input_with_the_scenario_digits() -> None:
    h = Harness()
    a = answered_a(h)
    assert h.pbx.redirect(a, "callback-pin", "s", 1)
    h.scheduler.advance(0.5)
    assert not h.of("UserEvent")
    h.scheduler.advance(1)
    first = h.one("UserEvent")
    assert first.category == "user"
    assert [k for k, _ in first.body][-6:] == [
        "ChanVariable",
        "UserEvent",
        "Prompt",
        "Digits",
        "Status",
        "Attempt",
    ]
    assert dict(first.body[-5:]) == {
        "UserEvent": "CallbackInput",
        "Prompt": "pin",
        "Digits": "0000",
        "Status": "OK",
        "Attempt": "1",
    }
    assert (first.get("Channel"), first.get("Context"), first.get("Uniqueid")) == (
        a,
        "callback-pin",
        "cb-1-a",
    )
    assert chanvars(first) == {"CALLBACK_ID": "cb-1", "LEG": "A", "ATTEMPT": "1"}
    h.pbx.redirect(a, "callback-pin", "s", 1)  # wrong PIN: the prompt plays again
    h.scheduler.advance(2)
    second = h.of("UserEvent")[-1]
    assert (second.get("Digits"), second.get("Attempt")) == ("1234", "2")


def test_a_prompt_without_scenario_digits_times_out() -> None:
    h = Harness()
    a = answered_a(h)
    h.pbx.redirect(a, "callback-card-number", "s", 1)
    h.scheduler.advance(2)
    event = h.one("UserEvent")
    assert (event.get("Prompt"), event.get("Digits"), event.get("Status")) == ("card_number", "", "TIMEOUT")


def test_leg_b_is_dialled_bridged_and_both_hang_up_after_the_shorter_talk() -> None:
    h = Harness()
    a = answered_a(h)
    start = len(h.events)
    assert h.pbx.redirect(a, "callback-dial-b", "222", 1)
    h.scheduler.run_until_idle()
    b = "PJSIP/carrier-00000002"
    assert h.trace(start) == [
        ("Newexten", a),
        ("Newchannel", b),
        ("VarSet", b),
        ("VarSet", b),
        ("VarSet", b),
        ("DialBegin", a),
        ("Newstate", b),
        ("Newstate", b),
        ("DialEnd", a),
        ("BridgeCreate", ""),
        ("BridgeEnter", b),
        ("BridgeEnter", a),
        ("BridgeLeave", b),
        ("BridgeLeave", a),
        ("BridgeDestroy", ""),
        ("Hangup", b),
        ("Hangup", a),
    ]
    begin = h.one("DialBegin", Channel=a)
    assert (begin.get("DestChannel"), begin.get("DialString")) == (b, "222@carrier")
    assert chanvars(begin, "Dest") == {"CALLBACK_ID": "cb-1", "LEG": "B", "ATTEMPT": "1"}
    assert chanvars(begin) == {"CALLBACK_ID": "cb-1", "LEG": "A", "ATTEMPT": "1"}
    assert h.one("DialEnd", Channel=a).get("DialStatus") == "ANSWER"
    assert [e.get("BridgeNumChannels") for e in h.of("BridgeEnter")] == ["1", "2"]
    assert [e.get("BridgeNumChannels") for e in h.of("BridgeLeave")] == ["1", "0"]
    hangups = h.of("Hangup")
    assert {e.get("Cause") for e in hangups} == {"16"}
    bridged_at = h.one("BridgeCreate").at
    assert hangups[0].at - bridged_at == 10  # B talks 10 s, A would talk 30 s


def test_max_seconds_variable_cuts_the_bridged_call() -> None:
    h = Harness()
    a = answered_a(h)
    h.pbx.set_var(a, "CALLBACK_MAX_SECONDS", "4")
    h.pbx.redirect(a, "callback-dial-b", "222", 1)
    h.scheduler.run_until_idle()
    assert h.one("BridgeDestroy").at - h.one("BridgeCreate").at == 4


def test_busy_leg_b_leaves_a_up_for_the_busy_ivr() -> None:
    h = Harness()
    a = answered_a(h)
    h.pbx.redirect(a, "callback-dial-b", "333", 1)
    h.scheduler.advance(2)
    end = h.one("DialEnd", Channel=a)
    assert (end.get("DialStatus"), end.get("DestChannel")) == ("BUSY", "PJSIP/carrier-00000002")
    assert h.one("Hangup").get("Cause") == "17"
    assert h.pbx.find(a) is not None
    h.pbx.redirect(a, "callback-busy-ivr", "s", 1)
    h.scheduler.run_until_idle()
    last = h.events[-1]
    assert (last.name, last.get("Channel"), last.get("Cause")) == ("Hangup", a, "16")
    assert h.of("Newexten", Channel=a)[-1].get("Application") == "Playback"


def test_dial_timeout_variable_shortens_the_leg_b_ring() -> None:
    h = Harness()
    a = answered_a(h)
    h.pbx.set_var(a, "CALLBACK_DIAL_TIMEOUT", "7")
    h.pbx.redirect(a, "callback-dial-b", "444", 1)
    h.scheduler.advance(10)
    end = h.one("DialEnd", Channel=a)
    assert end.get("DialStatus") == "NOANSWER"
    assert end.at - h.one("DialBegin", Channel=a).at == 7


def test_redirecting_a_out_of_the_bridge_hangs_up_b() -> None:
    h = Harness()
    a = answered_a(h)
    h.pbx.redirect(a, "callback-dial-b", "222", 1)
    h.scheduler.advance(5)
    assert h.of("BridgeEnter")
    start = len(h.events)
    h.pbx.redirect(a, "callback-failed-ivr", "s", 1)
    assert h.trace(start)[:4] == [
        ("BridgeLeave", a),
        ("BridgeLeave", "PJSIP/carrier-00000002"),
        ("BridgeDestroy", ""),
        ("Hangup", "PJSIP/carrier-00000002"),
    ]
    assert h.pbx.find(a) is not None


def test_local_leg_a_hangup_propagates_through_both_bridges() -> None:
    h = Harness({"subscribers": {"111": {"talk_seconds": 5}, "222": {"talk_seconds": 50}}})
    h.originate("Local/111@callback-out")
    h.scheduler.advance(3)
    one = "Local/111@callback-out-00000001;1"
    h.pbx.redirect(one, "callback-dial-b", "222", 1)
    h.scheduler.run_until_idle()
    hangups = [e.get("Channel") for e in h.of("Hangup")]
    # A (the trunk leg behind ;1) talks 5 s and hangs up first; B goes last.
    assert hangups == [
        "PJSIP/carrier-00000002",
        "Local/111@callback-out-00000001;2",
        one,
        "PJSIP/carrier-00000003",
    ]
    assert len(h.of("BridgeDestroy")) == 2


def test_an_answered_subscriber_left_waiting_hangs_up() -> None:
    h = Harness({"subscribers": {"111": {"idle_hangup": 30}}})
    answered_a(h)
    h.scheduler.run_until_idle()
    hangup = h.one("Hangup")
    assert (hangup.get("Cause"), hangup.at) == ("16", T0 + 1 + 30)


# --------------------------------------------------------------------------- variables


def test_setvar_getvar_and_callerid_function() -> None:
    h = Harness()
    a = answered_a(h)
    assert h.pbx.set_var(a, "FOO", "bar")
    assert h.events[-1].name == "VarSet"
    assert h.pbx.get_var(a, "FOO") == (True, "bar")
    assert h.pbx.get_var(a, "CALLBACK_ID") == (True, "cb-1")
    assert h.pbx.get_var(a, "UNIQUEID") == (True, "cb-1-a")
    h.pbx.set_var(a, "CALLERID(num)", "37052000100")
    assert h.events[-1].name == "NewCallerid"
    assert h.events[-1].get("CallerIDNum") == "37052000100"
    assert h.pbx.get_var("nope", "FOO") == (False, None)
    assert h.pbx.set_var(None, "GLOBAL", "1") and h.pbx.get_var(None, "GLOBAL") == (True, "1")


def test_uniqueids_carry_the_virtual_time_and_system_name() -> None:
    h = Harness()
    h.scheduler.advance(100)
    h.pbx.start_inbound("1", "2")
    assert h.events[0].get("Uniqueid") == f"pbx-sim-{int(T0) + 100}.1"
    assert h.events[0].at == T0 + 100


def test_redirect_with_extra_channel_moves_both_without_hanging_up() -> None:
    h = Harness()
    a = answered_a(h)
    h.pbx.redirect(a, "callback-dial-b", "222", 1)
    h.scheduler.advance(5)
    b = "PJSIP/carrier-00000002"
    assert h.pbx.redirect(a, "park", "1", 1, extra_name=b, extra_target=("park", "2", 1))
    assert not h.of("Hangup")
    assert h.one("BridgeDestroy")
    a_ch, b_ch = h.pbx.find(a), h.pbx.find(b)
    assert a_ch is not None and b_ch is not None
    assert (a_ch.context, a_ch.exten, b_ch.exten) == ("park", "1", "2")


def test_a_ringing_outbound_channel_cannot_be_redirected() -> None:
    h = Harness()
    h.originate("PJSIP/444@carrier")
    h.scheduler.advance(1)
    assert not h.pbx.can_redirect("cb-1-a")
    assert not h.pbx.redirect("cb-1-a", "callback-pin", "s", 1)


def test_originate_to_an_application_runs_it_after_answer() -> None:
    h = Harness()
    h.originate("PJSIP/111@carrier", context=None, exten=None, application="Playback", data="hello")
    h.scheduler.advance(5)
    resp = response_of(h)
    assert (resp.get("Application"), resp.get("Data"), resp.get("Context")) == ("Playback", "hello", None)
    assert h.of("Newexten")[-1].get("Application") == "Playback"


def test_outcomes_play_in_order_for_successive_calls_to_one_number() -> None:
    """A subscriber busy twice, then answering: each Originate to the number gets the next outcome
    (what a test of leg-A retries needs), and the last one repeats."""
    h = Harness({"subscribers": {"999": {"outcomes": ["busy", "busy", "answer"], "answer_after": 1}}})
    for attempt in range(4):
        h.originate("PJSIP/999@carrier", action_id=f"act-{attempt}", channel_id=f"cb-1-a-{attempt}")
        h.scheduler.run_until(T0 + 10 * (attempt + 1))
    reasons = [e.get("Reason") for e in h.of("OriginateResponse")]
    assert reasons == ["5", "5", "4", "4"]
