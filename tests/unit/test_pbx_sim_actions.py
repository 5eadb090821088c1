"""AMI action handling of the simulator, without sockets: responses as Asterisk words them."""

from __future__ import annotations

import hashlib

from infra.pbx_sim.actions import (
    ActionContext,
    Outcome,
    Session,
    dispatch,
    parse_event_mask,
    parse_variables,
)
from infra.pbx_sim.clock import ManualScheduler
from infra.pbx_sim.events import Event
from infra.pbx_sim.pbx import Pbx
from infra.pbx_sim.protocol import Header, Message
from infra.pbx_sim.scenario import parse_scenario


class Client:
    def __init__(self) -> None:
        self.scheduler = ManualScheduler()
        self.events: list[Event] = []
        self.pbx = Pbx(
            parse_scenario({"subscribers": {"333": {"outcome": "busy"}}}), self.scheduler, self.events.append
        )
        self.later: list[list[Header]] = []
        self.session = Session(peer="127.0.0.1:1")
        self.ctx = ActionContext(self.session, self.pbx, {"cb": "pw"}, lambda: 42.9, self.later.append)

    def send(self, *headers: Header) -> Outcome:
        outcome = dispatch(self.ctx, Message.of(*headers))
        if outcome.effect is not None:
            outcome.effect()
        return outcome

    def login(self) -> Outcome:
        return self.send(("Action", "Login"), ("ActionID", "1"), ("Username", "cb"), ("Secret", "pw"))


def reply(outcome: Outcome, index: int = 0) -> dict[str, str]:
    return dict(outcome.replies[index])


def test_login_accepts_then_sends_fully_booted() -> None:
    c = Client()
    out = c.login()
    assert out.replies[0] == [
        ("Response", "Success"),
        ("ActionID", "1"),
        ("Message", "Authentication accepted"),
    ]
    assert out.replies[1] == [
        ("Event", "FullyBooted"),
        ("Privilege", "system,all"),
        ("Uptime", "42"),
        ("LastReload", "42"),
        ("Status", "Fully Booted"),
    ]
    assert c.session.authenticated and c.session.username == "cb"


def test_wrong_secret_fails_and_closes() -> None:
    c = Client()
    out = c.send(("Action", "login"), ("ActionID", "9"), ("Username", "cb"), ("Secret", "nope"))
    assert out.replies == [[("Response", "Error"), ("ActionID", "9"), ("Message", "Authentication failed")]]
    assert out.close and not c.session.authenticated


def test_md5_challenge_login() -> None:
    c = Client()
    challenge = reply(c.send(("Action", "Challenge"), ("AuthType", "md5")))["Challenge"]
    key = hashlib.md5(f"{challenge}pw".encode()).hexdigest()
    out = c.send(("Action", "Login"), ("AuthType", "MD5"), ("Username", "cb"), ("Key", key))
    assert reply(out)["Message"] == "Authentication accepted"


def test_actions_before_login_are_denied() -> None:
    c = Client()
    assert reply(c.send(("Action", "Ping"), ("ActionID", "p"))) == {
        "Response": "Error",
        "ActionID": "p",
        "Message": "Permission denied",
    }


def test_ping_logoff_unknown_and_missing_action() -> None:
    c = Client()
    c.login()
    ping = c.send(("Action", "Ping"), ("ActionID", "p"))
    assert [k for k, _ in ping.replies[0]] == ["Response", "ActionID", "Ping", "Timestamp"]
    assert reply(ping)["Ping"] == "Pong"
    assert reply(c.send(("Action", "Frobnicate")))["Message"].startswith(
        "Invalid/unknown command: Frobnicate."
    )
    assert reply(c.send(("ActionID", "x")))["Message"] == "Missing action in request"
    bye = c.send(("Action", "Logoff"))
    assert reply(bye) == {"Response": "Goodbye", "Message": "Thanks for all the fish."} and bye.close


def test_event_mask_on_off_and_classes() -> None:
    assert parse_event_mask("off") == frozenset()
    assert "call" in parse_event_mask("on")
    assert parse_event_mask("call,user,bogus") == {"call", "user"}
    c = Client()
    c.send(("Action", "Login"), ("Username", "cb"), ("Secret", "pw"), ("Events", "off"))
    assert not c.session.wants("call")
    assert reply(c.send(("Action", "Events"), ("EventMask", "call")))["Events"] == "On"
    assert c.session.wants("call") and not c.session.wants("user")
    assert reply(c.send(("Action", "Events"), ("EventMask", "off")))["Events"] == "Off"


def test_login_with_events_off_gets_no_fully_booted() -> None:
    c = Client()
    out = c.send(("Action", "Login"), ("Username", "cb"), ("Secret", "pw"), ("Events", "off"))
    assert len(out.replies) == 1


def test_variables_may_repeat_and_be_comma_separated() -> None:
    assert parse_variables(["A=1", "B=2,C=x=y", "junk", "=3"]) == [("A", "1"), ("B", "2"), ("C", "x=y")]


def test_async_originate_is_queued_before_any_event() -> None:
    c = Client()
    c.login()
    out = dispatch(
        c.ctx,
        Message.of(
            ("Action", "Originate"),
            ("ActionID", "o1"),
            ("Channel", "PJSIP/111@carrier"),
            ("Context", "callback-a"),
            ("Exten", "s"),
            ("Priority", "1"),
            ("Timeout", "30000"),
            ("Async", "true"),
            ("ChannelId", "cb-a"),
            ("Variable", "CALLBACK_ID=cb,LEG=A"),
            ("Variable", "ATTEMPT=2"),
        ),
    )
    assert reply(out) == {"Response": "Success", "ActionID": "o1", "Message": "Originate successfully queued"}
    assert not c.events  # the call starts only when the effect runs, after the response is written
    assert out.effect is not None
    out.effect()
    c.scheduler.run_until_idle(limit=3)
    resp = [e for e in c.events if e.name == "OriginateResponse"][0]
    assert (resp.get("ActionID"), resp.get("Reason"), resp.get("Uniqueid")) == ("o1", "4", "cb-a")
    assert c.pbx.get_var("cb-a", "ATTEMPT") == (True, "2")


def test_sync_originate_answers_when_the_call_resolves() -> None:
    c = Client()
    c.login()
    out = c.send(("Action", "Originate"), ("ActionID", "s1"), ("Channel", "SIP/carrier/333"), ("Exten", "s"))
    assert out.replies == []
    c.scheduler.run_until_idle()
    assert c.later == [[("Response", "Error"), ("ActionID", "s1"), ("Message", "Originate failed")]]
    assert not [e for e in c.events if e.name == "OriginateResponse"]


def test_originate_validation_messages() -> None:
    c = Client()
    c.login()
    assert reply(c.send(("Action", "Originate")))["Message"] == "Channel not specified"
    assert reply(c.send(("Action", "Originate"), ("Channel", "nonsense")))["Message"] == "Invalid channel"
    bad_priority = c.send(("Action", "Originate"), ("Channel", "SIP/1"), ("Priority", "x"))
    assert reply(bad_priority)["Message"] == "Invalid priority"
    bad_timeout = c.send(("Action", "Originate"), ("Channel", "SIP/1"), ("Timeout", "soon"))
    assert reply(bad_timeout)["Message"] == "Invalid timeout"


def test_hangup_redirect_setvar_getvar_errors() -> None:
    c = Client()
    c.login()
    assert reply(c.send(("Action", "Hangup")))["Message"] == "No channel specified"
    assert reply(c.send(("Action", "Hangup"), ("Channel", "SIP/x-1")))["Message"] == "No such channel"
    redirect = [("Action", "Redirect"), ("Channel", "SIP/x-1"), ("Context", "c"), ("Exten", "s")]
    assert reply(c.send(*redirect))["Message"] == "Priority not specified"
    assert reply(c.send(*redirect, ("Priority", "0")))["Message"] == "Priority is invalid"
    assert reply(c.send(*redirect, ("Priority", "1")))["Message"] == "Channel does not exist: SIP/x-1"
    assert reply(c.send(("Action", "Setvar"), ("Value", "1")))["Message"] == "No variable specified"
    assert reply(c.send(("Action", "Getvar"), ("Channel", "SIP/x-1"), ("Variable", "A")))["Message"] == (
        "No such channel"
    )


def test_hangup_redirect_and_variables_on_a_live_channel() -> None:
    c = Client()
    c.login()
    inbound = c.pbx.start_inbound("37060000001", "37052000100")
    set_out = c.send(("Action", "Setvar"), ("Channel", inbound.name), ("Variable", "X"), ("Value", "y"))
    assert reply(set_out)["Message"] == "Variable Set"
    get_out = c.send(("Action", "Getvar"), ("ActionID", "g"), ("Channel", inbound.name), ("Variable", "X"))
    assert get_out.replies[0] == [
        ("Response", "Success"),
        ("ActionID", "g"),
        ("Variable", "X"),
        ("Value", "y"),
    ]
    hang = c.send(("Action", "Hangup"), ("Channel", inbound.name), ("Cause", "21"))
    assert reply(hang)["Message"] == "Channel Hungup"
    assert c.events[-1].name == "Hangup" and c.events[-1].get("Cause") == "21"
