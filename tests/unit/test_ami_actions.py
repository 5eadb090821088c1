"""Commands -> AMI actions (pure)."""

from __future__ import annotations

from producers.action_ids import channel_id_for, decode_action_id
from producers.ami_actions import actions_for
from schemas.callback import LegType
from schemas.pbx_commands import DialLegB, Hangup, Originate, Redirect, SetVar

BASE = {"source": "processors", "callback_id": "cb-1", "server_id": "pbx1"}


def test_originate_action():
    cmd = Originate(
        **BASE,
        command_id="cb-1:a:2",
        leg=LegType.A,
        attempt=2,
        number="2348031234567",
        channel="Local/2348031234567@callback-out",
        context="callback-pin",
        timeout_ms=30000,
        caller_id_num="18005550100",
        caller_id_name="Callback",
        variables={"FOO": "bar"},
    )
    (action,) = actions_for(cmd)
    assert action["Action"] == "Originate" and action["Async"] == "true" and action["Timeout"] == "30000"
    assert action["ChannelId"] == channel_id_for("cb-1:a:2")
    assert action["CallerID"] == '"Callback" <18005550100>'
    assert action["Variable"] == ["CALLBACK_ID=cb-1", "LEG=A", "ATTEMPT=2", "FOO=bar"]
    ref = decode_action_id(action["ActionID"])
    assert (ref.callback_id, ref.leg, ref.attempt, ref.command_id) == ("cb-1", "a", 2, "cb-1:a:2")


def test_originate_without_cid_uses_fallback_or_none():
    cmd = Originate(
        **BASE, command_id="c", attempt=0, number="1", channel="Local/1@x", context="c", timeout_ms=5000
    )
    assert actions_for(cmd, fallback_cid="18005550100")[0]["CallerID"] == "<18005550100>"
    assert "CallerID" not in actions_for(cmd)[0]


def test_hangup_redirect_setvar_and_dial_b():
    assert actions_for(Hangup(**BASE, command_id="h", channel="PJSIP/c-1", cause=21))[0] | {
        "ActionID": ""
    } == {"Action": "Hangup", "ActionID": "", "Channel": "PJSIP/c-1", "Cause": "21"}
    redirect = actions_for(
        Redirect(**BASE, command_id="r", channel="L/1", context="callback-busy-ivr", purpose="busy_ivr")
    )[0]
    assert (redirect["Action"], redirect["Context"], redirect["Exten"], redirect["Priority"]) == (
        "Redirect",
        "callback-busy-ivr",
        "s",
        "1",
    )
    setvar = actions_for(SetVar(**BASE, command_id="s", channel="L/1", variable="X", value="1"))[0]
    assert (setvar["Action"], setvar["Variable"], setvar["Value"]) == ("Setvar", "X", "1")
    steps = actions_for(
        DialLegB(
            **BASE,
            command_id="d",
            a_channel="L/1",
            number="34911222333",
            max_duration_s=120,
            caller_id_num="2348031234567",
        )
    )
    assert [s["Action"] for s in steps] == ["Setvar", "Setvar", "Setvar", "Redirect"]
    assert {s["Variable"]: s["Value"] for s in steps[:-1]} == {
        "CALLBACK_DIAL_TIMEOUT": "60",
        "CALLBACK_MAX_SECONDS": "120",
        "CALLERID(num)": "2348031234567",
    }
    assert (steps[-1]["Context"], steps[-1]["Exten"]) == ("callback-dial-b", "34911222333")
    assert len({s["ActionID"] for s in steps}) == 4  # panoramisk matches replies by ActionID
