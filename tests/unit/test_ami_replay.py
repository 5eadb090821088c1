"""Every shared real-Asterisk transcript through ``callback ami-replay``, asserting the exact events.

The fixtures carry no ``Timestamp`` header, so times come from the replay clock (newest Uniqueid
epoch seen): answer times below are the seconds the PBX created the answering channels' calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callback.cli import app

REPO = Path(__file__).resolve().parents[2]
FIXTURES = next(
    p
    for p in (
        Path(os.environ.get("CALLBACK_AMI_FIXTURES", "/nonexistent")),
        REPO / "tests" / "fixtures" / "asterisk-ami",
    )
    if p.is_dir()
)
ALL = sorted(p.name for p in FIXTURES.glob("*.json"))


def run_replay(name: str, *extra: str) -> list[dict]:
    result = CliRunner().invoke(app, ["ami-replay", str(FIXTURES / name), "--pbx", "pbx1", *extra])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def rows(records: list[dict]) -> list[tuple]:
    """(type, channel, detail, key) per record: detail = cause/sip, dial status, or answer time."""
    out = []
    for r in records:
        v = r["value"]
        if v["type"] == "channel.hangup":
            detail = (v["q850_cause"], v["cause_text"], v["sip_code"])
        elif v["type"] == "dial.result":
            detail = (v["dial_status"], v["dest_channel"])
        elif v["type"] == "channel.answered":
            detail = v["occurred_at"]
        else:
            detail = (v["ani"], v["did"])
        out.append((v["type"], v.get("channel"), detail, r["key"]))
    return out


def test_fixtures_are_all_there():
    assert ALL == [
        "mobile_acceptance_timeout.json",
        "originate_ctd-account-world.json",
        "simple_ab_reject.json",
        "simple_ab_success_a_hangup.json",
        "var_set_user_events.json",
    ]


@pytest.mark.parametrize("name", ALL)
def test_every_fixture_replays_without_rejects_or_duplicates(name):
    records = run_replay(name)
    assert records and not [r for r in records if "reject" in r]
    ids = [r["value"]["event_id"] for r in records]
    assert len(ids) == len(set(ids))
    assert all(r["topic"] == "pbx.events" and r["value"]["pbx_id"] == "pbx1" for r in records)
    # no callback variables in these calls: every record is keyed by the Asterisk Linkedid
    assert all(r["key"] == r["value"]["linkedid"] for r in records)
    source = json.loads((FIXTURES / name).read_text())
    assert sum(r["value"]["type"] == "channel.hangup" for r in records) == sum(
        e["Event"] == "Hangup" for e in source
    )
    assert sum(r["value"]["type"] == "dial.result" for r in records) == sum(
        e["Event"] == "DialEnd" for e in source
    )


def test_simple_ab_reject_busy_17_486():
    L = "195176c06ab8-1529936241.98"
    assert rows(run_replay("simple_ab_reject.json")) == [
        (
            "dial.result",
            "Local/ID730151@osvpi_route_phoneaccount-00000004;2",
            ("BUSY", "SIP/150010002-00000009"),
            L,
        ),
        ("channel.hangup", "SIP/150010002-00000009", (17, "User busy", 486), L),
        ("channel.hangup", "Local/ID730151@osvpi_route_phoneaccount-00000004;2", (17, "User busy", 486), L),
        (
            "dial.result",
            "SIP/150010001-00000008",
            ("BUSY", "Local/ID730151@osvpi_route_phoneaccount-00000004;1"),
            L,
        ),
        ("channel.hangup", "Local/ID730151@osvpi_route_phoneaccount-00000004;1", (17, "User busy", 486), L),
        ("channel.hangup", "SIP/150010001-00000008", (17, "User busy", 486), L),
    ]


def test_simple_ab_success_answers_then_normal_clearing():
    L, T = "195176c06ab8-1529936170.42", "2018-06-25T14:16:10Z"
    assert rows(run_replay("simple_ab_success_a_hangup.json")) == [
        ("channel.answered", "SIP/150010002-00000005", T, L),
        (
            "dial.result",
            "Local/ID730151@osvpi_route_phoneaccount-00000002;2",
            ("ANSWER", "SIP/150010002-00000005"),
            L,
        ),
        ("channel.answered", "Local/ID730151@osvpi_route_phoneaccount-00000002;2", T, L),
        ("channel.answered", "Local/ID730151@osvpi_route_phoneaccount-00000002;1", T, L),
        (
            "dial.result",
            "SIP/150010001-00000004",
            ("ANSWER", "Local/ID730151@osvpi_route_phoneaccount-00000002;1"),
            L,
        ),
        ("channel.answered", "SIP/150010001-00000004", T, L),
        (
            "channel.hangup",
            "Local/ID730151@osvpi_route_phoneaccount-00000002;2",
            (16, "Normal Clearing", None),
            L,
        ),
        (
            "channel.hangup",
            "Local/ID730151@osvpi_route_phoneaccount-00000002;1",
            (16, "Normal Clearing", None),
            L,
        ),
        ("channel.hangup", "SIP/150010001-00000004", (16, "Normal Clearing", None), L),
        ("channel.hangup", "SIP/150010002-00000005", (16, "Normal Clearing", None), L),
    ]


def test_mobile_timeout_noanswer_19_480_and_continue():
    records = run_replay("mobile_acceptance_timeout.json")
    got = rows(records)
    inbound = "SIP/voipgrid-siproute-docker-0000007b"
    assert (
        (
            "dial.result",
            inbound,
            ("NOANSWER", "Local/ID3@osvpi_route_fixeddestination-00000052;1"),
            "f29ea68048f6-1530021414.2233",
        )
    ) in got
    assert (
        "channel.hangup",
        inbound,
        (19, "User alerting, no answer", 480),
        "f29ea68048f6-1530021414.2233",
    ) in got
    # the Local half's Hangup with Cause 0 is kept (no SIP mapping), not rejected
    assert (
        "channel.hangup",
        "Local/ID3@osvpi_route_fixeddestination-00000052;1",
        (0, "Unknown", None),
        "f29ea68048f6-1530021414.2233",
    ) in got
    assert [d[2][0] for d in got if d[0] == "dial.result"] == ["ANSWER", "NOANSWER", "CONTINUE"]
    # the inbound call was never answered; only the mobile leg's channels went Up
    assert inbound not in [g[1] for g in got if g[0] == "channel.answered"]


def test_mobile_timeout_as_callback_did_becomes_an_initiation():
    records = run_replay("mobile_acceptance_timeout.json", "--dids", "+31260010001")
    first = records[0]
    assert first["topic"] == "callback.requests"
    v = first["value"]
    assert (v["type"], v["origin"], v["ani"], v["did"], v["channel"], v["uniqueid"], v["pbx_id"]) == (
        "callback.initiation",
        "did",
        "31150010003",
        "31260010001",
        "SIP/voipgrid-siproute-docker-0000007b",
        "f29ea68048f6-1530021414.2233",
        "pbx1",
    )
    assert first["key"] == v["callback_id"] == "pbx1.f29ea68048f6-1530021414.2233"
    assert sum(r["topic"] == "callback.requests" for r in records) == 1
    # the initiation channel's own hangup is keyed and tagged by the callback it started
    hangup = [
        r
        for r in records
        if r["value"]["type"] == "channel.hangup"
        and r["value"]["channel"] == "SIP/voipgrid-siproute-docker-0000007b"
    ][0]
    assert hangup["key"] == v["callback_id"]
    assert (hangup["value"]["leg"], hangup["value"]["q850_cause"]) == ("initiation", 19)


def test_originate_click_to_dial_answer_times_of_a_and_b():
    records = run_replay("originate_ctd-account-world.json")
    answered = {
        r["value"]["channel"]: r["value"]["occurred_at"]
        for r in records
        if r["value"]["type"] == "channel.answered"
    }
    assert answered["SIP/150010001-00000008"] == "2018-07-19T08:55:15Z"  # leg A (the account phone)
    assert answered["SIP/voipgrid-siproute-docker-00000009"] == "2018-07-19T08:55:17Z"  # leg B (world)
    # the Originate's own dial has no Channel header: reported on the dialled Local channel's call
    no_channel = [
        r["value"] for r in records if r["value"]["type"] == "dial.result" and r["value"]["channel"] is None
    ]
    assert len(no_channel) == 1
    assert (no_channel[0]["dial_status"], no_channel[0]["dest_channel"], no_channel[0]["linkedid"]) == (
        "ANSWER",
        "Local/ID400379@osvpi_proc_connectab_ctd-00000010;1",
        "c4061ca6474c-1531990515.302",
    )
    hangups = [r["value"] for r in records if r["value"]["type"] == "channel.hangup"]
    assert len(hangups) == 12 and {(h["q850_cause"], h["sip_code"]) for h in hangups} == {(16, None)}


def test_var_set_user_events_two_calls_keyed_apart_and_notify_events_ignored():
    records = run_replay("var_set_user_events.json")
    keys = {r["key"] for r in records}
    assert keys == {"b6093874285e-1530278036.1196", "b6093874285e-1530278036.1206"}
    assert not [r for r in records if r["value"]["type"] == "ivr.input"]  # NotifyCallstate is not ours
    statuses = [r["value"]["dial_status"] for r in records if r["value"]["type"] == "dial.result"]
    assert statuses == ["ANSWER"] * 4


def test_missing_file_is_a_clean_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"Event": "Hangup"}')
    result = CliRunner().invoke(app, ["ami-replay", str(bad)])
    assert result.exit_code == 2
