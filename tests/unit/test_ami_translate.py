"""The pure AMI -> domain translation on hand-written events in Asterisk's field layout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from producers.action_ids import ActionRef, channel_id_for, decode_action_id, encode_action_id
from producers.ami_fields import channel_variables, normalize_number
from producers.ami_translate import Publish, Reject, Translator
from producers.dedup import RecentKeys

READ_AT = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def chan(event: str, uid: str = "pbx-1714564800.10", linked: str | None = None, **extra: object) -> dict:
    base = {
        "Event": event,
        "Channel": "PJSIP/carrier-00000001",
        "Uniqueid": uid,
        "Linkedid": linked or uid,
        "CallerIDNum": "2348031234567",
        "ConnectedLineNum": "<unknown>",
        "Exten": "s",
    }
    base.update(extra)
    return base


def one(outcomes: list) -> Publish:
    assert len(outcomes) == 1 and isinstance(outcomes[0], Publish), outcomes
    return outcomes[0]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("<unknown>", None),
        ("", None),
        (None, None),
        ("+2348031234567", "2348031234567"),
        ("2348031234567", "2348031234567"),
        ("anonymous", None),
        ("ID400379", None),
        ("1 212-555", "1212555"),
    ],
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_channel_variables_in_all_three_asterisk_formats():
    assert channel_variables({"ChanVariable(CALLBACK_ID)": "cb-1", "ChanVariable(LEG)": "A"}) == {
        "CALLBACK_ID": "cb-1",
        "LEG": "A",
    }
    assert channel_variables({"ChanVariable(SIP/x-0001)": ["CALLBACK_ID=cb-2", "ATTEMPT=3", "OTHER=1"]}) == {
        "CALLBACK_ID": "cb-2",
        "ATTEMPT": "3",
    }
    assert channel_variables({"ChanVariable": ["CALLBACK_ID=cb-3", "LEG=b", "FROM_DID=123"]}) == {
        "CALLBACK_ID": "cb-3",
        "LEG": "b",
    }
    assert channel_variables({"ChanVariable": "CALLBACK_ID="}) == {}  # empty = not set
    assert channel_variables({"DestChanVariable": "LEG=B"}, prefix="Dest") == {"LEG": "B"}


def test_answer_of_a_callback_channel_is_keyed_by_callback_id():
    t = Translator("pbx1")
    event = chan(
        "Newstate",
        ChannelState="6",
        ChannelStateDesc="Up",
        **{"ChanVariable(CALLBACK_ID)": "cb-42", "ChanVariable(LEG)": "A", "ChanVariable(ATTEMPT)": "2"},
    )
    out = one(t.translate(event, READ_AT))
    v = out.value
    assert (out.topic, out.key, v.type, v.callback_id, v.leg.value, v.attempt) == (
        "pbx.events",
        "cb-42",
        "channel.answered",
        "cb-42",
        "a",
        2,
    )
    assert v.caller_id_num == "2348031234567" and v.connected_num is None
    assert v.occurred_at == READ_AT


def test_timestamp_header_wins_over_read_time():
    t = Translator("pbx1")
    out = one(
        t.translate(
            chan("Hangup", Cause="17", **{"Cause-txt": "User busy", "Timestamp": "1714564801.250000"}),
            READ_AT,
        )
    )
    assert out.value.occurred_at == datetime(2024, 5, 1, 12, 0, 1, 250000, tzinfo=UTC)
    assert (out.value.q850_cause, out.value.sip_code, out.key) == (17, 486, "pbx-1714564800.10")


@pytest.mark.parametrize(
    "cause,sip", [(1, 404), (19, 480), (21, 403), (22, 301), (27, 502), (31, 480), (16, None), (34, 503)]
)
def test_hangup_causes_map_to_the_seed_sip_table(cause, sip):
    out = one(Translator("p").translate(chan("Hangup", Cause=str(cause)), READ_AT))
    assert out.value.sip_code == sip


def test_bad_cause_is_rejected_not_guessed():
    out = Translator("p").translate(chan("Hangup", Cause="abc"), READ_AT)
    assert isinstance(out[0], Reject) and out[0].error_kind == "bad_cause"


@pytest.mark.parametrize(
    "reason,outcome",
    [
        ("0", "failed"),
        ("1", "hangup"),
        ("3", "no_answer"),
        ("4", "answered"),
        ("5", "busy"),
        ("8", "congestion"),
    ],
)
def test_originate_response_reasons_and_action_id(reason, outcome):
    action_id = encode_action_id(ActionRef("cb-7", "a", 1, "cmd/originate:cb-7:a:1"))
    event = {
        "Event": "OriginateResponse",
        "ActionID": action_id,
        "Response": "Success" if reason == "4" else "Failure",
        "Channel": "Local/2348031234567@callback-out",
        "Context": "callback-a",
        "Exten": "s",
        "Reason": reason,
        "Uniqueid": channel_id_for("cmd/originate:cb-7:a:1"),
        "CallerIDNum": "<unknown>",
    }
    out = one(Translator("pbx1").translate(event, READ_AT))
    v = out.value
    assert (out.key, v.type, v.outcome.value, v.reason_code, v.command_id, v.leg.value, v.attempt) == (
        "cb-7",
        "originate.result",
        outcome,
        int(reason),
        "cmd/originate:cb-7:a:1",
        "a",
        1,
    )


def test_originate_response_of_another_tool_is_keyed_by_its_uniqueid():
    event = {
        "Event": "OriginateResponse",
        "ActionID": "action/abc/1/1",
        "Response": "Failure",
        "Channel": "SIP/x",
        "Reason": "5",
        "Uniqueid": "<null>",
    }
    out = one(Translator("pbx1").translate(event, READ_AT))
    assert (
        out.value.callback_id is None and out.value.command_id is None and out.value.outcome.value == "busy"
    )
    assert out.key == "pbx1"  # nothing better to key by


def test_action_id_round_trip_and_foreign_ids():
    ref = ActionRef("cb.x:1", "b", 12, "id/with/slashes")
    assert decode_action_id(encode_action_id(ref)) == ref
    assert decode_action_id("action/uuid/1/1") is None and decode_action_id(None) is None
    assert channel_id_for("a") == channel_id_for("a") != channel_id_for("b")


def test_ivr_input_from_callback_user_event():
    event = chan(
        "UserEvent",
        UserEvent="CallbackInput",
        Prompt="pin",
        Digits="4821",
        **{"ChanVariable(CALLBACK_ID)": "cb-9", "ChanVariable(LEG)": "A"},
    )
    v = one(Translator("p").translate(event, READ_AT)).value
    assert (v.type, v.prompt.value, v.digits, v.callback_id) == ("ivr.input", "pin", "4821", "cb-9")


def test_ivr_input_unknown_prompt_is_rejected_and_foreign_user_events_ignored():
    bad = Translator("p").translate(
        chan("UserEvent", UserEvent="CallbackInput", Prompt="colour", Digits="1"), READ_AT
    )
    assert isinstance(bad[0], Reject) and bad[0].error_kind == "unknown_prompt"
    assert Translator("p").translate(chan("UserEvent", UserEvent="NotifyCallstate"), READ_AT) == []


def test_identical_ivr_inputs_without_sequence_are_never_deduplicated():
    t = Translator("p")
    event = chan("UserEvent", UserEvent="CallbackInput", Prompt="pin", Digits="0000")
    first, second = one(t.translate(event, READ_AT)), one(t.translate(event, READ_AT))
    assert first.dedup_key is None and second.dedup_key is None
    with_ts = one(t.translate(dict(event, Timestamp="1714564801.1"), READ_AT))
    assert with_ts.dedup_key is not None


def test_dial_end_with_unknown_status_is_rejected():
    out = Translator("p").translate(chan("DialEnd", DialStatus="WHATEVER", DestChannel="PJSIP/x"), READ_AT)
    assert isinstance(out[0], Reject) and out[0].error_kind == "unknown_dial_status"


def test_dial_end_of_leg_b_takes_callback_and_leg_from_the_dialled_channel():
    event = chan(
        "DialEnd",
        DialStatus="BUSY",
        DestChannel="PJSIP/carrier-00000009",
        DestUniqueid="pbx-2.2",
        DestCallerIDNum="34911222333",
        **{
            "ChanVariable(CALLBACK_ID)": "cb-5",
            "ChanVariable(LEG)": "A",
            "DestChanVariable(CALLBACK_ID)": "cb-5",
            "DestChanVariable(LEG)": "B",
        },
    )
    out = one(Translator("p").translate(event, READ_AT))
    assert (out.key, out.value.leg.value, out.value.dial_status.value, out.value.dest_number) == (
        "cb-5",
        "b",
        "BUSY",
        "34911222333",
    )


def test_initiation_on_access_number_once_with_withheld_ani():
    t = Translator("pbx1", dids=frozenset({"2349012345678"}))
    new = chan(
        "Newchannel", CallerIDNum="<unknown>", Exten="+2349012345678", ChannelState="4", Context="from-trunk"
    )
    out = t.translate(new, READ_AT)
    assert len(out) == 1 and out[0].topic == "callback.requests"
    init = out[0].value
    assert (init.ani, init.callback_number, init.did, init.origin.value, init.channel, init.pbx_id) == (
        None,
        None,
        "2349012345678",
        "did",
        "PJSIP/carrier-00000001",
        "pbx1",
    )
    assert out[0].key == init.callback_id == "pbx1.pbx-1714564800.10"
    assert t.translate(chan("Newstate", Exten="2349012345678", ChannelState="4"), READ_AT) == []
    hangup = one(t.translate(chan("Hangup", Cause="17"), READ_AT))
    assert (hangup.key, hangup.value.leg.value) == (init.callback_id, "initiation")


def test_no_initiation_for_local_halves_dialled_legs_or_our_own_channels():
    t = Translator("pbx1", dids=frozenset({"2349012345678"}))
    assert (
        t.translate(chan("Newchannel", Exten="2349012345678", Channel="Local/2349012345678@x-1;2"), READ_AT)
        == []
    )
    assert (
        t.translate(chan("Newchannel", uid="pbx-1.2", linked="pbx-1.1", Exten="2349012345678"), READ_AT) == []
    )
    ours = chan("Newchannel", uid="pbx-1.3", Exten="2349012345678", **{"ChanVariable(CALLBACK_ID)": "cb-1"})
    assert t.translate(ours, READ_AT) == []
    t.set_dids([])
    assert t.translate(chan("Newchannel", uid="pbx-1.4", Exten="2349012345678"), READ_AT) == []


def test_event_ids_are_deterministic_and_dedup_drops_repeats():
    e = chan("Hangup", Cause="16")
    a, b = one(Translator("p").translate(e, READ_AT)), one(Translator("p").translate(e, READ_AT))
    assert a.value.event_id == b.value.event_id and a.dedup_key == b.dedup_key
    recent = RecentKeys(capacity=2)
    assert not recent.seen(a.dedup_key) and recent.seen(a.dedup_key)
    recent.seen("x")
    recent.seen("y")
    assert not recent.seen(a.dedup_key)  # evicted: bounded memory
