"""The AMI producer's protocol: a malformed message is dead-lettered, its neighbours are handled.

panoramisk parses a whole read at once and raises on a message that repeats a header it reads as a
string (two ``Event:`` lines): asyncio then closes the connection and the other events of that read
are lost. ``GuardedAmiProtocol`` hands such a message to ``on_malformed`` and goes on.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from panoramisk.ami_protocol import AMIProtocol

from producers.ami_producer import (
    AmiProducer,
    BackoffManager,
    GuardedAmiProtocol,
    ProducerOptions,
    malformed_reason,
)
from producers.reference_data import AmiEndpoint

EOL = "\r\n"


def message(*headers: str) -> str:
    return EOL.join(headers) + EOL + EOL


def hangup(uniqueid: str, callback_id: str, cause: int = 16) -> str:
    return message(
        "Event: Hangup",
        f"Channel: PJSIP/trunk-{uniqueid}",
        f"Uniqueid: {uniqueid}",
        f"Linkedid: {uniqueid}",
        f"ChanVariable: CALLBACK_ID={callback_id}",
        "ChanVariable: LEG=A",
        "ChanVariable: ATTEMPT=1",
        f"Cause: {cause}",
        "Cause-txt: Normal Clearing",
    )


TWO_EVENTS = message("Event: Newchannel", "Event: Hangup", "Channel: PJSIP/x-1", "Uniqueid: 1.9", "Cause: 16")


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


class Rig:
    """A protocol wired to a real (never connected) BackoffManager, as panoramisk wires them."""

    def __init__(self, protocol_class: type[AMIProtocol] = GuardedAmiProtocol) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)  # panoramisk's actions make their futures on it
        self.events: list[dict[str, Any]] = []
        self.malformed: list[tuple[str, str]] = []
        self.manager = BackoffManager(
            loop=self.loop,
            host="127.0.0.1",
            port=1,
            username="u",
            secret="s",
            on_malformed=lambda raw, reason: self.malformed.append((raw, reason)),
        )
        self.manager.register_event("*", lambda _m, event: self.events.append(dict(event.items())))
        self.transport = FakeTransport()
        self.protocol = protocol_class()
        self.protocol.connection_made(self.transport)
        self.protocol.factory = self.manager
        self.protocol.encoding = "utf8"

    def feed(self, *chunks: str | bytes) -> None:
        for chunk in chunks:
            self.protocol.data_received(chunk.encode() if isinstance(chunk, str) else chunk)

    def close(self) -> None:
        asyncio.set_event_loop(None)
        self.loop.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def test_panoramisk_alone_raises_and_loses_the_rest_of_the_read():
    """Why the producer has its own protocol: this raise closes the connection (asyncio)."""
    rig = Rig(AMIProtocol)
    try:
        with pytest.raises(AttributeError):
            rig.feed(hangup("1.1", "cb-1") + TWO_EVENTS + hangup("1.2", "cb-2"))
        assert [e["Uniqueid"] for e in rig.events] == ["1.1"]  # 1.2 is gone
    finally:
        rig.close()


def test_a_repeated_event_header_is_reported_and_its_neighbours_dispatched(rig):
    rig.feed(hangup("1.1", "cb-1") + TWO_EVENTS + hangup("1.2", "cb-2"))
    assert [e["Uniqueid"] for e in rig.events] == ["1.1", "1.2"]
    ((raw, reason),) = rig.malformed
    assert raw == TWO_EVENTS.strip() and "'event' (2 times)" in reason
    assert not rig.transport.closed


def test_messages_split_across_reads_keep_their_boundaries(rig):
    data = (hangup("2.1", "cb-1") + TWO_EVENTS + hangup("2.2", "cb-2")).encode()
    rig.feed(*(data[i : i + 7] for i in range(0, len(data), 7)))
    assert [e["Uniqueid"] for e in rig.events] == ["2.1", "2.2"]
    assert len(rig.malformed) == 1


def test_a_character_split_between_two_reads_is_kept(rig):
    data = message("Event: Newchannel", "CallerIDName: Chidi Okonkwọ", "Uniqueid: 3.1").encode()
    cut = data.index("ọ".encode()) + 1  # in the middle of the two bytes
    rig.feed(data[:cut], data[cut:])
    assert rig.events[0]["CallerIDName"] == "Chidi Okonkwọ"


def test_banner_then_login_response_is_not_malformed(rig):
    action = rig.protocol.send({"Action": "Login", "Username": "u", "Secret": "s"})
    action_id = rig.transport.written[-1].decode().split("ActionID: ")[1].split(EOL)[0]
    rig.feed("Asterisk Call Manager/5.0.1" + EOL, message("Response: Success", f"ActionID: {action_id}"))
    assert action.done() and action.result().success
    assert rig.protocol.version == "5.0.1" and rig.malformed == []


@pytest.mark.parametrize(
    "block,expected",
    [
        (message("Response: Success", "ActionID: a", "ActionID: b"), "'actionid' (2 times)"),
        (message("Event: Hangup", "Uniqueid: 1.1", "Uniqueid: 1.2"), "'uniqueid' (2 times)"),
        (message("Channel: PJSIP/x", "Uniqueid: 1.1"), "neither an Event nor a Response"),
        (message("garbage without a colon"), "neither an Event nor a Response"),
    ],
)
def test_what_counts_as_malformed(rig, block, expected):
    assert expected in (malformed_reason(block.strip()) or "")
    rig.feed(block + hangup("4.1", "cb-4"))
    assert len(rig.malformed) == 1 and expected in rig.malformed[0][1]
    assert [e["Uniqueid"] for e in rig.events] == ["4.1"]


def test_headers_that_may_repeat_are_fine(rig):
    ok = message("Event: VarSet", "ChanVariable: CALLBACK_ID=cb-5", "ChanVariable: LEG=A", "Uniqueid: 5.1")
    assert malformed_reason(ok.strip()) is None
    rig.feed(ok)
    assert rig.events[0]["ChanVariable"] == ["CALLBACK_ID=cb-5", "LEG=A"] and rig.malformed == []


def test_a_message_whose_handling_raises_is_reported_not_fatal(rig):
    def broken(_manager: Any, event: Any) -> None:
        if event["Uniqueid"] == "6.1":
            raise RuntimeError("callback bug")

    rig.manager.register_event("Hangup", broken)
    rig.feed(hangup("6.1", "cb-6") + hangup("6.2", "cb-7"))
    assert [e["Uniqueid"] for e in rig.events] == ["6.1", "6.2"]
    ((_raw, reason),) = rig.malformed
    assert "RuntimeError: callback bug" in reason


class Collect:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, bytes]] = []

    async def publish(self, topic: str, key: str, value: bytes) -> None:
        self.records.append((topic, key, value))


def test_the_producer_dead_letters_the_raw_text_and_publishes_the_rest():
    async def scenario() -> Collect:
        out = Collect()
        producer = AmiProducer(
            ProducerOptions(endpoint=AmiEndpoint("pbx9", "127.0.0.1", 1, "u", "s")), out, frozenset()
        )
        manager = BackoffManager(
            loop=asyncio.get_running_loop(),
            host="127.0.0.1",
            port=1,
            username="u",
            secret="s",
            on_malformed=producer.on_malformed,
        )
        manager.register_event("*", producer.on_event)
        protocol = GuardedAmiProtocol()
        protocol.connection_made(FakeTransport())
        protocol.factory, protocol.encoding = manager, "utf8"
        protocol.data_received((hangup("7.1", "cb-71") + TWO_EVENTS + hangup("7.2", "cb-72")).encode())
        stop = asyncio.Event()
        sender = asyncio.ensure_future(producer.outbox.run(stop))
        for _ in range(100):
            if len(out.records) == 3:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(sender, 5)
        return out

    out = asyncio.run(scenario())
    by_topic: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for topic, key, value in out.records:
        by_topic.setdefault(topic, []).append((key, json.loads(value)))
    assert sorted((k, v["callback_id"]) for k, v in by_topic["pbx.events"]) == [
        ("cb-71", "cb-71"),
        ("cb-72", "cb-72"),
    ]
    ((key, letter),) = by_topic["dlq.pbx.events"]
    assert base64.b64decode(letter["value_b64"]).decode() == TWO_EVENTS.strip()
    assert letter["error_kind"] == "malformed_ami" and "'event' (2 times)" in letter["reason"]
    assert letter["source_topic"] == "pbx.events" and letter["details"]["event"] == ["Newchannel", "Hangup"]
    assert key == "1.9"  # its one Uniqueid (no Linkedid)
