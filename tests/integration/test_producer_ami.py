"""``callback producer`` against the PBX simulator over real AMI TCP, publishing to the real broker.

Each test uses its own numbers and callback ids, so records of other tests on the shared topics
are filtered out.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.pbx_sim.scenario import parse_scenario
from infra.process import wait_until
from infra.rig import CallbackProcess, KafkaTail, SimulatorThread, TcpProxy
from tests.rigs import AmiClient

pytestmark = pytest.mark.integration

TOPICS = ["pbx.events", "callback.requests", "dlq.pbx.events"]


def start_producer(
    tmp_path: Path, pbx: str, sim: SimulatorThread, dids: str, via: TcpProxy | None = None
) -> CallbackProcess:
    proc = CallbackProcess(sim.producer_args(pbx, "--dids", dids, via=via), tmp_path / "producer.log").start()
    proc.wait_for_log("logged in", timeout=30)
    return proc


def originate(
    client: AmiClient,
    number: str,
    callback_id: str,
    *,
    context: str = "callback-wait",
    timeout_ms: int = 10_000,
) -> str:
    channel_id = f"cbo-{callback_id}"
    reply = client.send(
        {
            "Action": "Originate",
            "Channel": f"Local/{number}@callback-out",
            "Context": context,
            "Exten": "s",
            "Priority": "1",
            "Timeout": str(timeout_ms),
            "Async": "true",
            "ChannelId": channel_id,
            "ActionID": f"cb/{callback_id}/a/1/cmd-{callback_id}",
            "Variable": [f"CALLBACK_ID={callback_id}", "LEG=A", "ATTEMPT=1"],
        }
    )
    assert reply["Response"] == "Success", reply
    return channel_id


@pytest.fixture
def tail(stack) -> Iterator[KafkaTail]:
    t = KafkaTail(TOPICS)
    yield t
    t.close()


def of(tail: KafkaTail, callback_id: str, type_: str | None = None) -> list[tuple]:
    return [
        r
        for r in tail.records
        if r[2].get("callback_id") == callback_id and (type_ is None or r[2].get("type") == type_)
    ]


def test_initiation_answer_ivr_and_hangups_land_on_the_right_topics_and_keys(stack, tail, tmp_path):
    tag = uuid.uuid4().hex[:6]
    ani, did, subscriber = "2348031" + tag[:3].encode().hex()[:6], "2349012345678", "2348055" + "123456"
    scenario = parse_scenario(
        {
            "subscribers": {
                subscriber: {"answer_after": 0.3, "pin": ["4821"], "input_delay": 0.3, "idle_hangup": 2}
            },
            "inbound": [{"at": 0.5, "ani": ani, "did": "+" + did}],
        }
    )
    sim = SimulatorThread(scenario)
    producer = start_producer(tmp_path, "pbxA", sim, did)
    client = AmiClient(sim.host, sim.port)
    try:
        # 1. the inbound call to the access number becomes an initiation on callback.requests
        ((topic, key, init),) = tail.wait_for(
            lambda r: r[0] == "callback.requests" and r[2].get("ani") == ani, what="the initiation"
        )
        assert (init["type"], init["origin"], init["did"], init["pbx_id"]) == (
            "callback.initiation",
            "did",
            did,
            "pbxA",
        )
        assert key == init["callback_id"] and init["channel"].startswith("PJSIP/") and init["uniqueid"]
        # 2. the processors would drop it with the dial plan's cause: do it as an AMI client would
        assert (
            client.send({"Action": "Hangup", "Channel": init["channel"], "Cause": "17"})["Response"]
            == "Success"
        )
        ((_, hkey, hangup),) = tail.wait_for(
            lambda r: r[2].get("type") == "channel.hangup" and r[2].get("channel") == init["channel"],
            what="the initiation's hangup",
        )
        assert (hkey, hangup["leg"], hangup["q850_cause"], hangup["sip_code"]) == (
            init["callback_id"],
            "initiation",
            17,
            486,
        )

        # 3. leg A: originate with the callback variables, answer, PIN prompt, input, hangup
        cb = f"cb-{tag}"
        originate(client, subscriber, cb)
        tail.wait_for(
            lambda r: r[2].get("callback_id") == cb and r[2].get("type") == "originate.result",
            what="originate.result",
        )
        a_channel = next(r[2]["channel"] for r in of(tail, cb, "originate.result"))
        assert (
            client.send(
                {
                    "Action": "Redirect",
                    "Channel": a_channel,
                    "Context": "callback-pin",
                    "Exten": "s",
                    "Priority": "1",
                }
            )["Response"]
            == "Success"
        )
        tail.wait_for(lambda r: r[2].get("callback_id") == cb and r[2].get("type") == "ivr.input", what="PIN")
        tail.wait_for(
            lambda r: (
                r[2].get("callback_id") == cb
                and r[2].get("type") == "channel.hangup"
                and r[2].get("channel") == a_channel
            ),
            what="leg A hangup",
            timeout=20,
        )
        records = of(tail, cb)
        assert all(key == cb and topic == "pbx.events" for topic, key, _ in records)
        result = of(tail, cb, "originate.result")[0][2]
        assert (
            result["outcome"],
            result["reason_code"],
            result["command_id"],
            result["leg"],
            result["attempt"],
        ) == ("answered", 4, f"cmd-{cb}", "a", 1)
        ivr = of(tail, cb, "ivr.input")[0][2]
        assert (ivr["prompt"], ivr["digits"], ivr["channel"], ivr["leg"]) == ("pin", "4821", a_channel, "a")
        answered = [r[2] for r in of(tail, cb, "channel.answered")]
        assert a_channel in {a["channel"] for a in answered}
        # the trunk channel the Local/ originate dialled carries no variables but is keyed by the callback too
        assert any(a["channel"].startswith("PJSIP/") for a in answered)
        ids = [r[2]["event_id"] for r in records]
        assert len(ids) == len(set(ids)), "a record was published twice"
    finally:
        client.close()
        assert producer.stop() == 0, producer.log_text()[-2000:]
        sim.close()


def test_reconnect_in_the_middle_of_a_call_loses_nothing(stack, tail, tmp_path):
    """The AMI link drops while leg A is up; the producer reconnects (backoff) and publishes the rest."""
    cb, number = f"cb-rc-{uuid.uuid4().hex[:6]}", "37060000777"
    scenario = parse_scenario(
        {
            "subscribers": {
                number: {"answer_after": 0.3, "pin": ["1111"], "input_delay": 0.2, "idle_hangup": 5}
            }
        }
    )
    sim = SimulatorThread(scenario)
    proxy = TcpProxy(sim.host, sim.port)
    producer = start_producer(tmp_path, "pbxR", sim, "2349999999999", via=proxy)
    client = AmiClient(sim.host, sim.port)
    try:
        originate(client, number, cb)
        tail.wait_for(
            lambda r: r[2].get("callback_id") == cb and r[2].get("type") == "originate.result",
            what="answer before the cut",
        )
        a_channel = of(tail, cb, "originate.result")[0][2]["channel"]
        before = len(of(tail, cb))

        proxy.cut()  # the network drops the producer's AMI session; the PBX and the call go on
        wait_until(
            lambda: producer.log_text().count("logged in again") >= 1, 20, "the producer to log in again"
        )
        assert proxy.connections >= 2

        client.send(
            {
                "Action": "Redirect",
                "Channel": a_channel,
                "Context": "callback-pin",
                "Exten": "s",
                "Priority": "1",
            }
        )
        tail.wait_for(
            lambda r: r[2].get("callback_id") == cb and r[2].get("type") == "ivr.input",
            what="IVR input after the reconnect",
        )
        tail.wait_for(
            lambda r: (
                r[2].get("callback_id") == cb
                and r[2].get("type") == "channel.hangup"
                and r[2].get("channel") == a_channel
            ),
            what="hangup after the reconnect",
            timeout=30,
        )
        records = of(tail, cb)
        assert len(records) > before
        types = [r[2]["type"] for r in records]
        for expected in ("channel.answered", "originate.result", "ivr.input", "channel.hangup"):
            assert expected in types, f"{expected} missing: {types}"
        assert len({r[2]["event_id"] for r in records}) == len(records), "duplicates published"
        assert "AMI connection lost" in producer.log_text()
    finally:
        client.close()
        producer.stop()
        proxy.close()
        sim.close()


def test_pbx_restart_mid_call_publishes_the_cut_call_and_the_calls_after_it(stack, tail, tmp_path):
    """Asterisk restarts mid-call: the producer sees Shutdown, keeps what it read before, logs in to the
    new incarnation on the same port (with backoff while the port is closed), and publishes its calls."""
    cb1, cb2, number = f"cb-r1-{uuid.uuid4().hex[:6]}", f"cb-r2-{uuid.uuid4().hex[:6]}", "37060000888"
    scenario = parse_scenario({"subscribers": {number: {"answer_after": 0.3, "idle_hangup": 30}}})
    sim = SimulatorThread(scenario)
    producer = start_producer(tmp_path, "pbxS", sim, "2349999999998")
    try:
        client = AmiClient(sim.host, sim.port)
        originate(client, number, cb1)
        tail.wait_for(
            lambda r: r[2].get("callback_id") == cb1 and r[2].get("type") == "originate.result",
            what="first call answered",
        )
        client.close()
        sim.stop()  # sends Shutdown, closes every session
        wait_until(lambda: "AMI connection lost" in producer.log_text(), 10, "the producer to notice")
        time.sleep(2.5)  # PBX down for a while: reconnect attempts back off (1 s, 2 s, ...)
        sim.start_again()
        wait_until(lambda: "logged in again" in producer.log_text(), 30, "re-login after the PBX restart")
        client = AmiClient(sim.host, sim.port)
        originate(client, number, cb2)
        tail.wait_for(
            lambda r: r[2].get("callback_id") == cb2 and r[2].get("type") == "originate.result",
            what="call after the restart",
        )
        client.close()
        first = of(tail, cb1)
        assert [r[2]["type"] for r in first].count("originate.result") == 1
        assert (
            "Not able to reconnect" in producer.log_text()
            or producer.log_text().count("reconnecting in") >= 1
        )
    finally:
        producer.stop()
        sim.close()


# --- a malformed message among valid ones -------------------------------------------------------


def inject(sim: SimulatorThread, data: bytes) -> int:
    """Write ``data`` as is, in one write, to every AMI session receiving call events (the producer's):
    what an Asterisk bug or a corrupting middlebox would put on the wire. Returns the sessions."""

    def send() -> int:
        sessions = [c for c in sim.sim._connections if c.session.wants("call")]
        for conn in sessions:
            conn.send(data)
        return len(sessions)

    return sim.call(send)


def _hangup(uniqueid: str, callback_id: str) -> str:
    return (
        "Event: Hangup\r\nPrivilege: call,all\r\n"
        f"Channel: PJSIP/trunk-{uniqueid}\r\nUniqueid: {uniqueid}\r\nLinkedid: {uniqueid}\r\n"
        f"ChanVariable: CALLBACK_ID={callback_id}\r\nChanVariable: LEG=A\r\nChanVariable: ATTEMPT=1\r\n"
        "Cause: 16\r\nCause-txt: Normal Clearing\r\n\r\n"
    )


def test_a_malformed_message_is_dead_lettered_and_its_neighbours_published_on_the_same_connection(
    stack, tail, tmp_path
):
    """Two ``Event:`` lines in one message: panoramisk used to raise, asyncio dropped the connection
    and the valid events read with it. Now: a dead letter with the raw text, both neighbours on
    pbx.events, no reconnect; and the connection still carries the PBX's own events afterwards."""
    tag = uuid.uuid4().hex[:6]
    before, after, later = f"cb-mf1-{tag}", f"cb-mf2-{tag}", f"cb-mf3-{tag}"
    number = "37060000555"
    sim = SimulatorThread(parse_scenario({"subscribers": {number: {"answer_after": 0.3, "idle_hangup": 1}}}))
    proxy = TcpProxy(sim.host, sim.port)  # counts the producer's connections
    producer = start_producer(tmp_path, "pbxM", sim, "2349999999997", via=proxy)
    try:
        malformed = (
            f"Event: Newchannel\r\nEvent: Hangup\r\nChannel: PJSIP/x-{tag}\r\nUniqueid: 1700000000.{tag}\r\n"
            "Cause: 16\r\n\r\n"
        )
        data = (_hangup(f"1.{tag}1", before) + malformed + _hangup(f"1.{tag}2", after)).encode()
        assert inject(sim, data) == 1
        published = tail.wait_for(
            lambda r: r[0] == "pbx.events" and r[2].get("callback_id") in (before, after),
            count=2,
            what="the two valid hangups around the malformed message",
        )
        assert sorted((r[1], r[2]["type"]) for r in published) == [
            (before, "channel.hangup"),
            (after, "channel.hangup"),
        ]
        ((_, key, letter),) = tail.wait_for(
            lambda r: r[0] == "dlq.pbx.events" and tag in r[2].get("details", {}).get("raw", ""),
            what="the dead letter",
        )
        assert base64.b64decode(letter["value_b64"]).decode() == malformed.strip()
        assert letter["error_kind"] == "malformed_ami" and "'event' (2 times)" in letter["reason"]
        assert letter["details"]["pbx_id"] == "pbxM" and key == f"1700000000.{tag}"

        # the same connection goes on: a real call's events are published, and nobody reconnected
        client = AmiClient(sim.host, sim.port)
        try:
            originate(client, number, later)
            tail.wait_for(
                lambda r: r[2].get("callback_id") == later and r[2].get("type") == "originate.result",
                what="an event after the malformed one",
            )
        finally:
            client.close()
        log = producer.log_text()
        assert "AMI connection lost" not in log and "logged in again" not in log, log[-2000:]
        assert proxy.connections == 1
    finally:
        assert producer.stop() == 0, producer.log_text()[-2000:]
        proxy.close()
        sim.close()
