"""``callback originator`` (a real subprocess) executing pbx.commands on the PBX simulator over AMI TCP,
with ``callback producer`` reporting the outcomes, on the real broker.

Each test has its own Callback Server id, consumer group and journal, so commands of other tests on
the shared topic are never executed here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from callback.kafka_io import base_config, producer_config
from infra.pbx_sim.scenario import parse_scenario
from infra.process import wait_until
from infra.rig import CallbackProcess, KafkaTail, SimulatorThread, ami_secret_env, free_port
from producers.action_ids import channel_id_for
from schemas.callback import LegType
from schemas.pbx_commands import Hangup, Originate
from tests.rigs import carrier_config_for

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

SCENARIO = {
    "subscribers": {
        "37061000001": {"outcome": "answer", "answer_after": 0.3, "idle_hangup": 3},
        "37061000002": {"outcome": "busy", "fail_after": 0.3},
        "37061000003": {"outcome": "no_answer"},
        "37061000004": {"outcome": "congestion", "fail_after": 0.3},
        "37061000005": {"outcome": "answer", "answer_after": 0.3, "idle_hangup": 3},
        "37061000006": {"outcome": "answer", "answer_after": 0.3, "idle_hangup": 3},
    }
}


class Rig:
    """Simulator + producer + originator for one test, with helpers to send commands and read results."""

    def __init__(self, tmp_path: Path, *, server_reachable: bool = True) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.server = f"pbx-{self.tag}"
        self.tmp = tmp_path
        self.sim = SimulatorThread(parse_scenario(SCENARIO))
        port = self.sim.port if server_reachable else free_port()
        # no ami_secret in the file: the originator has it from its settings (ami.secrets.<server>)
        self.config = carrier_config_for(
            tmp_path / "carrier.yaml", {self.server: (self.sim.host, port)}, secret_in_file=False
        )
        self.journal = tmp_path / "originator.journal"
        self.group = f"test-originator-{self.tag}"
        self.tail = KafkaTail(["pbx.events", "dlq.pbx.commands"])
        self.kafka = Producer(producer_config())
        self.producer = CallbackProcess(
            self.sim.producer_args(self.server, "--dids", ""), tmp_path / "producer.log"
        ).start()
        self.producer.wait_for_log("logged in")
        self.originator: CallbackProcess | None = None
        self.start_originator()

    def start_originator(self) -> CallbackProcess:
        n = len(list(self.tmp.glob("originator*.log")))
        self.originator = CallbackProcess(
            [
                "originator",
                "--config",
                str(self.config),
                "--journal",
                str(self.journal),
                "--group",
                self.group,
            ],
            self.tmp / f"originator{n}.log",
            env=ami_secret_env(self.server),
        ).start()
        self.originator.wait_for_log("assigned pbx.commands partitions", timeout=40)
        return self.originator

    def originate(self, number: str, *, attempt: int = 1, timeout_ms: int = 5000) -> Originate:
        cb = f"cb-{self.tag}-{number[-2:]}-{attempt}"
        return Originate(
            source="test",
            command_id=f"{cb}:originate:a:{attempt}",
            callback_id=cb,
            server_id=self.server,
            leg=LegType.A,
            attempt=attempt,
            number=number,
            channel=f"Local/{number}@callback-out",
            context="callback-wait",
            timeout_ms=timeout_ms,
        )

    def send(self, command: Originate | Hangup | bytes, key: str | None = None) -> tuple[int, int]:
        value = command if isinstance(command, bytes) else command.to_bytes()
        key = key if key is not None else command.callback_id  # type: ignore[union-attr]
        where: list[tuple[int, int]] = []
        self.kafka.produce(
            "pbx.commands",
            key=key.encode(),
            value=value,
            on_delivery=lambda err, msg: where.append((msg.partition(), msg.offset())),
        )
        self.kafka.flush(10)
        return where[0]

    def result(self, callback_id: str, type_: str = "originate.result", timeout: float = 30) -> dict:
        ((_, key, value),) = self.tail.wait_for(
            lambda r: r[2].get("callback_id") == callback_id and r[2].get("type") == type_,
            what=f"{type_} of {callback_id}",
            timeout=timeout,
        )[:1]
        assert key == callback_id
        return value

    def originates_of(self, number: str) -> list:
        return [
            e for e in self.sim.actions("Originate") if e.get("Channel") == f"Local/{number}@callback-out"
        ]

    def close(self) -> None:
        if self.originator is not None:
            self.originator.stop()
        self.producer.stop()
        self.tail.close()
        self.sim.close()


@pytest.fixture
def rig(stack, tmp_path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_answer_busy_no_answer_and_congestion_come_back(rig):
    cases = {
        "37061000001": ("answered", 4),
        "37061000002": ("busy", 5),
        "37061000003": ("no_answer", 3),
        "37061000004": ("congestion", 8),
    }
    commands = {n: rig.originate(n, timeout_ms=2000) for n in cases}
    for command in commands.values():
        rig.send(command)
    for number, (outcome, reason) in cases.items():
        cmd = commands[number]
        result = rig.result(cmd.callback_id)
        assert (
            result["outcome"],
            result["reason_code"],
            result["command_id"],
            result["leg"],
            result["attempt"],
            result["pbx_id"],
        ) == (outcome, reason, cmd.command_id, "a", 1, rig.server), number
        (action,) = rig.originates_of(number)
        assert action.get("ChannelId") == channel_id_for(cmd.command_id)
        assert action.get("Timeout") == "2000" and action.get("Async") == "true"
        assert sorted(action.get_all("Variable")) == sorted(
            [f"CALLBACK_ID={cmd.callback_id}", "LEG=A", "ATTEMPT=1"]
        )
        # no CallerID in the command: the CID policy's fallback (the carrier's default CID) was applied
        assert action.get("CallerID") == "<18005550100>"
    assert "CID policy fallback" in rig.originator.log_text()


def test_duplicate_command_and_sigkill_restart_ring_the_number_once(rig):
    x, y = rig.originate("37061000005"), rig.originate("37061000006")
    partition, offset = rig.send(x)
    rig.result(x.callback_id)
    rig.send(x)  # Kafka redelivers / the processors resend: same command id
    rig.originator.wait_for_log(
        f"command {x.command_id} (pbx.originate, callback {x.callback_id}) already executed"
    )
    assert len(rig.originates_of("37061000005")) == 1

    rig.originator.kill()  # SIGKILL: no clean shutdown, no final commit
    # a crash makes Kafka redeliver: rewind the group to before the first delivery of x
    admin = AdminClient(base_config())
    from confluent_kafka import ConsumerGroupTopicPartitions

    def rewound() -> bool:  # refused while the killed member's session is still alive (~10 s)
        futures = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(rig.group, [TopicPartition("pbx.commands", partition, offset)])]
        )
        try:
            result = next(iter(futures.values())).result(20)
        except Exception:
            return False
        return all(tp.error is None for tp in result.topic_partitions)

    wait_until(rewound, 40, "the group offsets to be rewound", interval=1.0)
    rig.send(y)
    restarted = rig.start_originator()
    rig.result(y.callback_id)
    restarted.wait_for_log(
        f"command {x.command_id} (pbx.originate, callback {x.callback_id}) already executed"
    )
    assert len(rig.originates_of("37061000005")) == 1, "x rang twice"
    assert len(rig.originates_of("37061000006")) == 1
    assert rig.sim.actions("Originate").__len__() == 2


def test_crash_between_journal_and_send_is_reported_not_retried(stack, tmp_path):
    rig = Rig(tmp_path)
    try:
        z = rig.originate("37061000001", attempt=7)
        rig.originator.stop()
        # what a crash right after the journal's fsync leaves behind
        with open(rig.journal, "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "id": z.command_id,
                        "state": "intent",
                        "t": 2e9,
                        "type": z.type,
                        "callback_id": z.callback_id,
                        "server": rig.server,
                    }
                )
                + "\n"
            )
        rig.start_originator()
        failed = rig.result(z.callback_id, "command.failed")
        assert (failed["command_id"], failed["outcome_unknown"], failed["pbx_id"]) == (
            z.command_id,
            True,
            rig.server,
        )
        rig.send(z)  # redelivered after the crash
        rig.originator.wait_for_log(
            f"command {z.command_id} (pbx.originate, callback {z.callback_id}) already"
        )
        assert rig.originates_of("37061000001") == []
    finally:
        rig.close()


def test_unreachable_pbx_and_bad_commands_become_events_not_crashes(stack, tmp_path):
    rig = Rig(tmp_path, server_reachable=False)
    try:
        rig.send(b"{not json", key="garbage")
        rig.send(b'{"type": "pbx.originate", "command_id": "x"}', key="incomplete")
        cmd = rig.originate("37061000001")
        rig.send(cmd)
        failed = rig.result(cmd.callback_id, "command.failed", timeout=40)
        assert "unreachable" in failed["error"] and failed["outcome_unknown"] is False
        letters = rig.tail.wait_for(
            lambda r: r[0] == "dlq.pbx.commands" and r[1] in ("garbage", "incomplete"),
            count=2,
            what="dead letters",
        )
        kinds = {r[1]: r[2]["error_kind"] for r in letters}
        assert kinds == {"garbage": "malformed_json", "incomplete": "invalid_schema"}
        assert rig.originator.proc.poll() is None, "the originator died"
        # a stale command is reported, not executed late
        old = rig.originate("37061000002").model_copy(update={"time": datetime(2020, 1, 1, tzinfo=UTC)})
        rig.send(old)
        stale = rig.result(old.callback_id, "command.failed")
        assert "old" in stale["error"]
        wait_until(lambda: rig.sim.actions("Originate") == [], 1, "no originate")
    finally:
        rig.close()


def test_the_secret_comes_from_the_originators_settings_not_from_config_servers(stack, tmp_path):
    """The carrier file still has ami_secret; ``callback config load`` does not publish it, so an
    originator following config.servers without the secret in its settings reports the command
    failed (no_secret); with ``CALLBACK_AMI__SECRETS__<ID>`` it logs in and rings."""
    import yaml

    tag = uuid.uuid4().hex[:8]
    server = f"pbx-{tag}"
    sim = SimulatorThread(parse_scenario(SCENARIO))
    tail = KafkaTail(["pbx.events"])
    kafka = Producer(producer_config())
    processes: list[CallbackProcess] = []
    try:
        data = yaml.safe_load((REPO_ROOT / "examples" / "carrier.yaml").read_text())
        data["servers"].append(
            {
                "server_id": server,
                "ami_host": sim.host,
                "ami_port": sim.port,
                "ami_username": "callback",
                "ami_secret": "callback",
            }
        )
        carrier = tmp_path / "carrier.yaml"
        carrier.write_text(yaml.safe_dump(data, sort_keys=False))
        loaded = CallbackProcess(["config", "load", str(carrier)], tmp_path / "load.log").start()
        loaded.proc.wait(60)
        assert loaded.stop() == 0, loaded.log_text()
        assert "not published" in loaded.log_text()

        def originator(name: str, env: dict[str, str]) -> CallbackProcess:
            journal = str(tmp_path / f"{name}.journal")
            group = f"test-originator-{tag}"
            process = CallbackProcess(
                ["originator", "--journal", journal, "--group", group], tmp_path / f"{name}.log", env=env
            ).start()
            processes.append(process)
            process.wait_for_log("assigned pbx.commands partitions", timeout=40)
            return process

        def command(number: str, attempt: int) -> Originate:
            cb = f"cb-{tag}-{attempt}"
            return Originate(
                source="test",
                command_id=f"{cb}:originate:a:{attempt}",
                callback_id=cb,
                server_id=server,
                leg=LegType.A,
                attempt=attempt,
                number=number,
                channel=f"Local/{number}@callback-out",
                context="callback-wait",
                timeout_ms=2000,
            )

        def send(cmd: Originate) -> None:
            kafka.produce("pbx.commands", key=cmd.callback_id.encode(), value=cmd.to_bytes())
            kafka.flush(10)

        def failure(cmd: Originate, what: str) -> dict:
            ((_, _, failed),) = tail.wait_for(
                lambda r: r[2].get("callback_id") == cmd.callback_id and r[2].get("type") == "command.failed",
                what=what,
            )[:1]
            return failed

        without = originator("originator-no-secret", {})
        assert f"no AMI secret for PBX {server}" in without.log_text()
        first = command("37061000001", 1)
        send(first)
        failed = failure(first, "the command refused for want of a secret")
        assert f"ami.secrets.{server}" in failed["error"] and failed["outcome_unknown"] is False
        assert sim.actions("Login") == [] and sim.actions("Originate") == []
        without.stop()

        with_secret = originator("originator-with-secret", ami_secret_env(server))
        second = command("37061000001", 2)
        send(second)
        (action,) = wait_until(lambda: sim.actions("Originate"), 30, "the Originate sent with the secret")
        assert action.get("ChannelId") == channel_id_for(second.command_id)
        with_secret.wait_for_log(f"executed pbx.originate {second.command_id} on {server}")
        tail.poll(1.0)
        assert not [r for r in tail.records if r[2].get("command_id") == second.command_id], "reported failed"
        # the server deleted from config.servers (a tombstone): the running originator forgets it
        kafka.produce("config.servers", key=server.encode(), value=None)
        kafka.flush(10)
        with_secret.wait_for_log(f"server {server} deleted; disconnecting", timeout=15)
        third = command("37061000001", 3)
        send(third)
        refused = failure(third, "the command for a deleted server refused")
        assert "is not configured" in refused["error"] and len(sim.actions("Originate")) == 1
    finally:
        for process in processes:
            process.stop()
        tail.close()
        sim.close()
