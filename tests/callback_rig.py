"""A whole callback rig on the real stack, for the processors' integration and kill tests.

``CallbackRig`` starts, against the running local stack: the PBX simulator (real AMI over TCP, in
this process), ``callback producer``, ``callback originator`` and ``callback processors`` as real
subprocesses, and publishes a carrier configuration whose Callback Server is that simulator. It
then places initiation calls on the simulator and collects what the pipeline publishes
(``callback.sessions``, ``pbx.commands``, ``callback.legs``), so a test asserts on outcomes, PBX
commands, finished legs and the simulator's own log of the AMI actions it received.

Every run has its own server id, dial plans, DIDs, numbers, PINs and cards (``RunNumbers``), so
runs on one stack never see each other's callbacks, and reference lookups stay unambiguous.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callback.publish import publish_config
from infra.pbx_sim.scenario import parse_scenario
from infra.process import wait_until
from infra.rig import PBX, CallbackProcess, KafkaTail, SimulatorThread, ami_secret_env, free_port
from producers.ami_translate import initiation_callback_id
from schemas.callback import TERMINAL_STATES
from schemas.carrier_config import CarrierConfig

TERMINAL = {s.value for s in TERMINAL_STATES}
Record = tuple[str, str | None, dict[str, Any]]


class CallbackRig:
    def __init__(
        self,
        tmp: Path,
        carrier: Callable[[str, str], dict[str, Any]],
        subscribers: dict[str, dict[str, Any]],
        *,
        instance: str = "it",
        processors_env: dict[str, str] | None = None,
        speed: float = 1.0,
    ) -> None:
        """``carrier(tag, server_id)`` returns the carrier file as a dict (``servers`` is added)."""
        self.tmp = tmp
        self.tag = uuid.uuid4().hex[:8]
        self.server = f"pbx-{self.tag}"
        self.action_log = tmp / "actions.jsonl"
        self.sim = SimulatorThread(
            parse_scenario({"pbx": PBX, "subscribers": subscribers}), action_log=self.action_log, speed=speed
        )
        data = carrier(self.tag, self.server)
        data["servers"] = [
            {
                "server_id": self.server,
                "ami_host": self.sim.host,
                "ami_port": self.sim.port,
                "ami_username": "callback",
            }
        ]
        self.config = CarrierConfig.model_validate(data)
        self.instance = instance
        self.processors_env = processors_env or {}
        self.processors: CallbackProcess | None = None
        self.extra_processors: list[CallbackProcess] = []
        self.originator: CallbackProcess | None = None
        self.producer: CallbackProcess | None = None
        self.tail = KafkaTail(["callback.sessions", "pbx.commands", "callback.legs"])
        try:
            publish_config(self.config, transactional_id=f"config-{self.tag}")
            self.start_processors()
            self.originator = CallbackProcess(
                ["originator", "--journal", str(tmp / "originator.journal"), "--group", f"orig-{self.tag}"],
                tmp / "originator.log",
                env=ami_secret_env(self.server),
            ).start()
            self.producer = CallbackProcess(self.sim.producer_args(self.server), tmp / "producer.log").start()
            self.originator.wait_for_log("assigned pbx.commands partitions", timeout=60)
            self.producer.wait_for_log("logged in", timeout=60)
            self.wait_processors_ready()
        except BaseException:
            self.close()  # a half-started rig must not leave processes behind (a stray originator
            raise  # would execute the next run's commands too)

    # --- processes ---------------------------------------------------------------------------------
    def start_processors(self, instance: str | None = None) -> CallbackProcess:
        """Start the worker (again), or with ``instance`` another worker of the same group."""
        n = len(list(self.tmp.glob("processors*.log")))
        process = CallbackProcess(
            ["processors", "--instance", instance or self.instance, "--web-port", str(free_port()),
             "--data-dir", str(self.tmp / "processors-data")],
            self.tmp / f"processors{n}.log",
            env=self.processors_env,
        ).start()
        if instance is None:
            self.processors = process
        else:
            self.extra_processors.append(process)
        return process

    def wait_processors_ready(self, timeout: float = 90.0) -> None:
        assert self.processors is not None
        self.processors.wait_for_log("processors ready", timeout=timeout)
        self.processors.wait_for_log("reference data loaded:", timeout=timeout)

    def kill_processors(self) -> None:
        assert self.processors is not None
        self.processors.kill()

    # --- traffic -----------------------------------------------------------------------------------
    def call(self, ani: str | None, did: str, ring_timeout: float = 30.0) -> str:
        """An initiation call from ``ani`` (None = withheld) to ``did``; returns its callback id."""
        channel = self.sim.call(lambda: self.sim.sim.pbx.start_inbound(ani, did, ring_timeout))
        return initiation_callback_id(self.server, channel.uniqueid)

    # --- what came out -------------------------------------------------------------------------------
    def records(self, topic: str, callback_id: str) -> list[dict[str, Any]]:
        self.tail.poll(0.1)
        return [v for t, _k, v in self.tail.records if t == topic and v.get("callback_id") == callback_id]

    def transitions(self, callback_id: str) -> list[dict[str, Any]]:
        """The session's transitions, each once (a restart may publish one again), in order."""
        by_seq = {t["sequence"]: t for t in self.records("callback.sessions", callback_id)}
        return [by_seq[s] for s in sorted(by_seq)]

    def commands(self, callback_id: str) -> list[dict[str, Any]]:
        by_id = {c["command_id"]: c for c in self.records("pbx.commands", callback_id)}
        return list(by_id.values())

    def legs(self, callback_id: str) -> dict[str, dict[str, Any]]:
        return {leg["leg_id"]: leg for leg in self.records("callback.legs", callback_id)}

    def outcome(self, callback_id: str, *, legs: int, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the session has its final state and ``legs`` finished legs; the last transition."""

        def done() -> dict[str, Any] | None:
            states = self.transitions(callback_id)
            if states and states[-1]["to_state"] in TERMINAL and len(self.legs(callback_id)) >= legs:
                return states[-1]
            return None

        try:
            return wait_until(done, timeout, f"the outcome of {callback_id}", interval=0.1)
        except TimeoutError:
            raise AssertionError(self.diagnose(callback_id)) from None

    def diagnose(self, callback_id: str) -> str:
        states = [(t["to_state"], t["reason"]) for t in self.transitions(callback_id)]
        cmds = [c["type"] for c in self.commands(callback_id)]
        log = self.processors.log_text()[-4000:] if self.processors else ""
        return (f"{callback_id}: transitions {states}, commands {cmds}, legs {sorted(self.legs(callback_id))}"
                f"\nprocessors log tail:\n{log}")

    def pbx_actions(self, name: str, **headers: str) -> list[Any]:
        return self.sim.actions(name, **headers)

    def originates_to(self, number: str) -> int:
        channel = f"Local/{number}@callback-out"
        return sum(1 for e in self.pbx_actions("Originate") if e.get("Channel") == channel)

    def close(self) -> None:
        for process in (self.producer, self.originator, self.processors, *self.extra_processors):
            if process is not None:
                process.stop()
        self.tail.close()
        self.sim.close()
