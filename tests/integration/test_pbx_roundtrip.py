"""Done-when: simulator + producer + originator run one originate from the command topic to the
result event, over real AMI TCP and real Kafka, and the simulator's action log shows one Originate."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Producer

from callback.kafka_io import producer_config
from infra.rig import CallbackProcess, KafkaTail, SimulatorThread
from schemas.callback import LegType
from schemas.pbx_commands import Originate
from tests.rigs import carrier_config_for

pytestmark = pytest.mark.integration


def test_one_originate_from_command_topic_to_result_event(stack, tmp_path):
    from infra.pbx_sim.scenario import parse_scenario

    tag = uuid.uuid4().hex[:8]
    server, number, cb = f"pbx-rt-{tag}", "2348031234567", f"cb-rt-{tag}"
    action_log = tmp_path / "actions.jsonl"
    sim = SimulatorThread(
        parse_scenario({"subscribers": {number: {"answer_after": 0.5, "idle_hangup": 2}}}),
        action_log=action_log,
    )
    config = carrier_config_for(tmp_path / "carrier.yaml", {server: (sim.host, sim.port)})
    tail = KafkaTail(["pbx.events"])
    producer = CallbackProcess(
        ["producer", "--pbx", server, "--config", str(config)], tmp_path / "producer.log"
    ).start()
    originator = CallbackProcess(
        ["originator", "--config", str(config), "--journal", str(tmp_path / "j"), "--group", f"rt-{tag}"],
        tmp_path / "originator.log",
    ).start()
    try:
        producer.wait_for_log("logged in")
        originator.wait_for_log("assigned pbx.commands partitions", timeout=40)
        command = Originate(
            source="test",
            command_id=f"{cb}:a:1",
            callback_id=cb,
            server_id=server,
            leg=LegType.A,
            attempt=1,
            number=number,
            channel=f"Local/{number}@callback-out",
            context="callback-wait",
            timeout_ms=30_000,
            caller_id_num="18005550100",
        )
        kafka = Producer(producer_config())
        kafka.produce("pbx.commands", key=cb.encode(), value=command.to_bytes())
        assert kafka.flush(10) == 0

        ((_, key, result),) = tail.wait_for(
            lambda r: r[2].get("callback_id") == cb and r[2].get("type") == "originate.result",
            what="the result",
        )
        assert (key, result["outcome"], result["command_id"], result["pbx_id"]) == (
            cb,
            "answered",
            command.command_id,
            server,
        )
        tail.wait_for(
            lambda r: r[2].get("callback_id") == cb and r[2].get("type") == "channel.hangup",
            what="leg A's hangup",
        )
        logged = [json.loads(line) for line in action_log.read_text().splitlines()]
        originates = [e for e in logged if e["action"] == "Originate"]
        assert len(originates) == 1
        assert ["CallerID", '"18005550100" <18005550100>'] not in originates[0]["headers"]
        assert ["CallerID", "<18005550100>"] in originates[0]["headers"]
    finally:
        originator.stop()
        producer.stop()
        tail.close()
        sim.close()
