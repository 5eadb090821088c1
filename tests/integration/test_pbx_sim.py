"""The PBX simulator over real TCP with panoramisk as the client: what the AMI producer will see.

No mocks: each test starts the simulator on a free port (port 0), connects panoramisk's
``Manager`` and drives calls with AMI actions. The clock runs 50x faster than real time,
so a 25 s ring timeout takes half a second. Needs no Kafka or ClickHouse.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from panoramisk import Manager
from panoramisk.message import Message

from infra.pbx_sim import BackgroundSimulator, PbxSimulator, SimulatorOptions, parse_scenario

SPEED = 50.0
REPO = Path(__file__).resolve().parents[2]
SCENARIO = {
    "subscribers": {
        "37060000001": {"answer_after": 2, "pin": "1234", "destination": "4930123456", "talk_seconds": 20},
        "37060000003": {"outcome": "busy"},
        "37060000004": {"outcome": "no_answer"},
        "37060000005": {"outcome": "congestion"},
        "4930123456": {"answer_after": 3, "talk_seconds": 8},
    },
    "inbound": [{"at": 0.5, "ani": "37060000009", "did": "37052000100"}],
}


class Client:
    """A logged-in panoramisk Manager plus every event it received."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.login: Message | None = None
        self.events: list[Message] = []
        manager.register_event("*", lambda _m, event: self.events.append(event))

    def of(self, name: str, **fields: str) -> list[Message]:
        return [e for e in self.events if e.event == name and all(e.get(k) == v for k, v in fields.items())]

    async def wait_for(self, name: str, timeout: float = 5.0, **fields: str) -> Message:
        async def poll() -> Message:
            while True:
                found = self.of(name, **fields)
                if found:
                    return found[0]
                await asyncio.sleep(0.01)

        return await asyncio.wait_for(poll(), timeout)

    async def send(self, action: dict[str, Any]) -> Any:
        return await asyncio.wait_for(self.manager.send_action(action), 10)


async def connect(sim: PbxSimulator, secret: str = "callback", events: str = "on") -> Client:
    manager = Manager(
        host=sim.host,
        port=sim.port,
        username="callback",
        secret=secret,
        events=events,
        loop=asyncio.get_running_loop(),
        ping_delay=3600,
        reconnect_timeout=3600,
    )
    client = Client(manager)
    await manager.connect()  # its done-callback has sent the Login by the time this returns
    client.login = await asyncio.wait_for(manager.authenticated_future, 5)
    return client


def run(test: Callable[[PbxSimulator], Awaitable[None]], scenario: dict[str, Any] | None = None) -> None:
    async def main() -> None:
        options = SimulatorOptions(port=0, speed=SPEED)
        async with PbxSimulator(parse_scenario(SCENARIO if scenario is None else scenario), options) as sim:
            await test(sim)

    asyncio.run(main())


def originate(number: str, channel_id: str, **extra: str) -> dict[str, Any]:
    action: dict[str, Any] = {
        "Action": "Originate",
        "Channel": f"PJSIP/{number}@carrier",
        "Context": "callback-a",
        "Exten": "s",
        "Priority": "1",
        "Timeout": "30000",
        "Async": "true",
        "ChannelId": channel_id,
        "CallerID": '"Callback" <37052000100>',
        "Variable": [f"CALLBACK_ID={channel_id[:-2]}", "LEG=A", "ATTEMPT=1"],
    }
    action.update(extra)
    return action


def test_login_ok_and_failure() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        ok = await connect(sim)
        assert ok.login is not None and ok.login.success
        assert ok.login.message == "Authentication accepted"
        await ok.wait_for("FullyBooted")
        bad = await connect(sim, secret="wrong")
        assert bad.login is not None
        assert (bad.login.response, bad.login.message) == ("Error", "Authentication failed")
        assert not bad.manager.authenticated
        ok.manager.close()
        bad.manager.close()

    run(scenario)


def test_ping() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        client = await connect(sim)
        pong = await client.send({"Action": "Ping"})
        assert (pong.response, pong.ping) == ("Success", "Pong")
        assert float(pong.timestamp) > 1_600_000_000
        client.manager.close()

    run(scenario)


def test_answered_originate_gives_reason_4_and_callback_id_on_every_event() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        client = await connect(sim)
        queued, response = await client.send(originate("37060000001", "cb-1-a"))
        assert (queued.response, queued.message) == ("Success", "Originate successfully queued")
        assert response.event == "OriginateResponse"
        assert (response.response, response.reason, response.uniqueid) == ("Success", "4", "cb-1-a")
        assert response.callerIDNum == "37052000100"
        channel = response.channel
        assert response[f"ChanVariable({channel})"] == ["CALLBACK_ID=cb-1", "LEG=A", "ATTEMPT=1"]
        up = await client.wait_for("Newstate", Channel=channel, ChannelStateDesc="Up")
        assert up.uniqueid == "cb-1-a"
        assert up.getdict("ChanVariable")["CALLBACK_ID"] == "cb-1"
        assert all("ChanVariable" in e for e in client.events if e.get("Channel") == channel)
        client.manager.close()

    run(scenario)


@pytest.mark.parametrize(
    ("number", "reason", "cause", "status"),
    [("37060000003", "5", "17", "BUSY"), ("37060000005", "8", "34", "CONGESTION")],
)
def test_busy_and_congested_originates(number: str, reason: str, cause: str, status: str) -> None:
    async def scenario(sim: PbxSimulator) -> None:
        client = await connect(sim)
        _, response = await client.send(originate(number, "cb-2-a"))
        assert (response.response, response.reason) == ("Failure", reason)
        hangup = await client.wait_for("Hangup", Uniqueid="cb-2-a")
        assert hangup.cause == cause
        assert client.of("DialEnd")[-1].dialStatus == status
        client.manager.close()

    run(scenario)


def test_unanswered_originate_gives_reason_3_after_the_timeout() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        client = await connect(sim)
        loop = asyncio.get_running_loop()
        started = loop.time()
        _, response = await client.send(originate("37060000004", "cb-3-a", Timeout="20000"))
        elapsed_virtual = (loop.time() - started) * SPEED
        assert (response.response, response.reason) == ("Failure", "3")
        assert 18 < elapsed_virtual < 30
        assert (await client.wait_for("Hangup", Uniqueid="cb-3-a")).cause == "19"
        client.manager.close()

    run(scenario)


def test_inbound_initiation_is_dropped_with_cause_21() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        await asyncio.sleep(0.1)  # 5 virtual seconds: the call is due 0.5 s after the first login
        assert not sim.pbx.channels
        client = await connect(sim)
        ringing = await client.wait_for("Newstate", ChannelStateDesc="Ring")
        assert (ringing.callerIDNum, ringing.exten, ringing.context) == (
            "37060000009",
            "37052000100",
            "from-trunk",
        )
        hung = await client.send({"Action": "Hangup", "Channel": ringing.channel, "Cause": "21"})
        assert (hung.response, hung.message) == ("Success", "Channel Hungup")
        hangup = await client.wait_for("Hangup", Channel=ringing.channel)
        assert (hangup.cause, hangup["Cause-txt"]) == ("21", "Call Rejected")
        client.manager.close()

    run(scenario)


def test_redirect_to_pin_prompt_raises_the_scenario_digits() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        client = await connect(sim)
        _, response = await client.send(originate("37060000001", "cb-4-a"))
        redirect = {
            "Action": "Redirect",
            "Channel": response.channel,
            "Context": "callback-pin",
            "Exten": "s",
        }
        moved = await client.send({**redirect, "Priority": "1"})
        assert (moved.response, moved.message) == ("Success", "Redirect successful")
        event = await client.wait_for("UserEvent", UserEvent="CallbackInput")
        assert (event.prompt, event.digits, event.status) == ("pin", "1234", "OK")
        assert (event.channel, event.uniqueid) == (response.channel, "cb-4-a")
        assert event.getdict("ChanVariable")["CALLBACK_ID"] == "cb-4"
        client.manager.close()

    run(scenario)


def test_redirect_to_the_dial_context_dials_and_bridges_leg_b() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        client = await connect(sim)
        _, response = await client.send(originate("37060000001", "cb-5-a"))
        a = response.channel
        limit = {"Action": "Setvar", "Channel": a, "Variable": "CALLBACK_MAX_SECONDS", "Value": "600"}
        assert (await client.send(limit)).message == "Variable Set"
        redirect = {"Action": "Redirect", "Channel": a, "Context": "callback-dial-b", "Exten": "4930123456"}
        await client.send({**redirect, "Priority": "1"})
        begin = await client.wait_for("DialBegin", Channel=a)
        b = begin.destChannel
        assert begin.getdict("DestChanVariable") == {"CALLBACK_ID": "cb-5", "LEG": "B", "ATTEMPT": "1"}
        end = await client.wait_for("DialEnd", Channel=a)
        assert (end.dialStatus, end.destChannel) == ("ANSWER", b)
        await client.wait_for("BridgeDestroy")
        await client.wait_for("Hangup", Channel=a)
        sequence = [
            (e.event, e.get("Channel", ""))
            for e in client.events
            if e.event.startswith("Bridge") or (e.event == "Hangup" and e.channel in (a, b))
        ]
        assert sequence == [
            ("BridgeCreate", ""),
            ("BridgeEnter", b),
            ("BridgeEnter", a),
            ("BridgeLeave", b),
            ("BridgeLeave", a),
            ("BridgeDestroy", ""),
            ("Hangup", b),
            ("Hangup", a),
        ]
        client.manager.close()

    run(scenario)


def test_action_log_shows_exactly_one_originate(tmp_path: Path) -> None:
    log_file = tmp_path / "actions.jsonl"

    async def main() -> None:
        options = SimulatorOptions(port=0, speed=SPEED, action_log_path=log_file)
        async with PbxSimulator(parse_scenario(SCENARIO), options) as sim:
            client = await connect(sim)
            await client.send(originate("37060000001", "cb-6-a"))
            await client.send({"Action": "Ping"})
            assert sim.action_log.count("Originate") == 1
            assert sim.action_log.count("Originate", ChannelId="cb-6-a") == 1
            assert sim.action_log.originated_numbers() == ["37060000001"]
            login = sim.action_log.of("Login")[0]
            assert login.get("Secret") == "********" and login.username is None
            assert sim.action_log.of("Ping")[0].username == "callback"
            client.manager.close()

    asyncio.run(main())
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["Login", "Originate", "Ping"]
    assert ["ChannelId", "cb-6-a"] in lines[1]["headers"]


def test_several_clients_and_event_masks() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        first = await connect(sim)
        second = await connect(sim)
        quiet = await connect(sim, events="off")
        await first.send(originate("37060000001", "cb-7-a"))
        for client in (first, second):
            await client.wait_for("Newstate", Uniqueid="cb-7-a", ChannelStateDesc="Up")
        assert second.of("OriginateResponse")  # someone else's Originate still reaches every session
        assert not quiet.events
        events_on = await quiet.send({"Action": "Events", "EventMask": "on"})
        assert events_on.events == "On"
        await first.send(originate("37060000001", "cb-7b-a"))
        await quiet.wait_for("Newstate", Uniqueid="cb-7b-a", ChannelStateDesc="Up")
        for client in (first, second, quiet):
            client.manager.close()

    run(scenario)


def test_setvar_getvar_and_unknown_action() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        client = await connect(sim)
        _, response = await client.send(originate("37060000001", "cb-8-a"))
        await client.send(
            {"Action": "Setvar", "Channel": response.channel, "Variable": "FOO", "Value": "bar"}
        )
        got = await client.send({"Action": "Getvar", "Channel": response.channel, "Variable": "FOO"})
        assert (got.response, got.variable, got.value) == ("Success", "FOO", "bar")
        unknown = await client.send({"Action": "Frobnicate"})
        assert unknown.response == "Error" and unknown.message.startswith("Invalid/unknown command")
        client.manager.close()

    run(scenario)


def test_cli_serves_until_sigterm_and_says_goodbye(tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.yaml"
    scenario_file.write_text("subscribers:\n  '111': {outcome: busy}\n")
    command = [
        sys.executable,
        "-c",
        "from callback.cli import main; main()",
        "pbx-sim",
        "--port",
        "0",
        "--speed",
        "20",
        "--scenario",
        str(scenario_file),
        "--username",
        "callback",
        "--secret",
        "callback",
    ]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("pbx-sim listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])

        async def talk() -> list[str]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert (await reader.readline()).startswith(b"Asterisk Call Manager/")
            writer.write(b"Action: Login\r\nUsername: callback\r\nSecret: callback\r\nEvents: system\r\n\r\n")
            await reader.readuntil(b"Fully Booted\r\n\r\n")
            proc.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return rest.decode().split("\r\n")

        lines = asyncio.run(talk())
        assert "Event: Shutdown" in lines
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_core_show_channels_lists_live_channels() -> None:
    async def scenario(sim: PbxSimulator) -> None:
        client = await connect(sim)
        await client.send(originate("37060000001", "cb-9-a"))
        listing = await client.send({"Action": "CoreShowChannels"})
        assert listing[0].message == "Channels will follow"
        entries = [m for m in listing if m.event == "CoreShowChannel"]
        assert "cb-9-a" in {e.uniqueid for e in entries}
        assert listing[-1].event == "CoreShowChannelsComplete"
        assert listing[-1].listItems == str(len(entries))
        client.manager.close()

    run(scenario)


def test_background_simulator_serves_synchronous_code() -> None:
    with BackgroundSimulator(parse_scenario(SCENARIO), SimulatorOptions(port=0, speed=SPEED)) as sim:
        channel = sim.call(lambda pbx: pbx.start_inbound("37060000001", "37052000100").name)
        with socket.create_connection((sim.host, sim.port), timeout=5) as sock:
            stream = sock.makefile("rb")
            assert stream.readline().startswith(b"Asterisk Call Manager/")
            sock.sendall(b"Action: Login\r\nUsername: callback\r\nSecret: callback\r\nEvents: off\r\n\r\n")
            sock.sendall(
                f"Action: Hangup\r\nActionID: h1\r\nChannel: {channel}\r\nCause: 21\r\n\r\n".encode()
            )
            replies = b""
            while b"Channel Hungup" not in replies:
                replies += sock.recv(4096)
        assert sim.action_log.count("Hangup", Channel=channel, Cause="21") == 1
        assert sim.call(lambda pbx: pbx.find(channel)) is None
