"""``callback demo``: start everything, play the plan, collect what the pipeline published.

Processes (real ones, as a carrier runs them; logs in ``<run dir>/logs``): the PBX simulator (in
this process, so its log of received AMI actions is at hand), two AMI producers on the one PBX (an
HA pair: each publishes every event under the same deterministic ids, and the processors apply an
input once, so one dropped AMI connection loses nothing), the originator, a processors worker, the
rater, the CDR sink and the web API. With ``chaos`` the run also SIGKILLs the processors worker
twice, the rater and the sink twice each, cuts one producer's AMI connection and pauses ClickHouse
for 20 s, at random moments of the seed, restarting what it killed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from callback.kafka_io import consumer_config
from callback.publish import publish_config
from infra.demo.scenario import DemoPlan, Kind, Planned, plan
from infra.pbx_sim.scenario import parse_scenario
from infra.process import wait_until
from infra.rig import CallbackProcess, SimulatorThread, TcpProxy, ami_secret_env, free_port
from producers.ami_translate import initiation_callback_id
from schemas.callback import TERMINAL_STATES
from schemas.carrier_config import CarrierConfig, load_carrier_config

SERVER = "pbx1"
#: how long each process may take to say it is ready (the worker's includes restoring its tables)
START_TIMEOUT_S = {"processors": 900.0, "other": 120.0}
PBX = {
    "channelvars": ["CALLBACK_ID", "LEG", "ATTEMPT"],
    "playback_contexts": {"callback-busy-ivr": 2.0, "callback-failed-ivr": 2.0},
}
TERMINAL = {s.value for s in TERMINAL_STATES}
WATCHED = ("callback.requests", "pbx.events", "pbx.commands", "callback.sessions", "callback.legs")


class DemoError(RuntimeError):
    """The demo could not run (a process did not start, the stack is unusable): one line to show."""


@dataclass(frozen=True)
class DemoOptions:
    callbacks: int = 300
    over_s: float = 60.0
    speed: float = 1.0
    seed: int = 7
    chaos: bool = False
    keep: bool = False
    run_dir: Path = Path(".demo")
    carrier_file: Path = Path("examples/carrier.yaml")
    #: how long to wait for the last outcomes and CDRs once every callback has been placed
    settle_s: float = 240.0


@dataclass
class Observed:
    """What the pipeline published about the demo's callbacks, as it arrives (thread-safe)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests_ms: dict[str, int] = field(default_factory=dict)
    transitions: dict[str, dict[int, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    commands: dict[str, dict[str, tuple[int, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    ivr_inputs: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    legs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    published_legs: int = 0  # every copy, re-published ones included

    def on(self, topic: str, ts_ms: int, value: dict[str, Any]) -> None:
        cb = value.get("callback_id")
        if not cb:
            return
        with self.lock:
            if topic == "callback.requests":
                self.requests_ms.setdefault(cb, ts_ms)
            elif topic == "callback.sessions":
                self.transitions[cb].setdefault(value["sequence"], value)
            elif topic == "pbx.commands":
                self.commands[cb].setdefault(value["command_id"], (ts_ms, value))
            elif topic == "pbx.events" and value.get("type") == "ivr.input":
                self.ivr_inputs[cb].setdefault(value["event_id"], ts_ms)  # the first of the HA pair
            elif topic == "callback.legs":
                self.published_legs += 1
                self.legs[cb].setdefault(value["leg_id"], value)

    def final(self, cb: str) -> dict[str, Any] | None:
        with self.lock:
            states = self.transitions.get(cb, {})
            last = states[max(states)] if states else None
        return last if last is not None and last["to_state"] in TERMINAL else None


class Collector:
    """Follows the pipeline's topics from their current end, in a thread, into ``Observed``."""

    def __init__(self, observed: Observed) -> None:
        self.observed = observed
        self._consumer = Consumer(consumer_config(f"demo-{os.getpid()}-{time.time_ns()}"))
        assignment = []
        for topic in WATCHED:
            for p in self._consumer.list_topics(topic, timeout=30).topics[topic].partitions:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                assignment.append(TopicPartition(topic, p, high))
        self._consumer.assign(assignment)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(num_messages=5000, timeout=0.2):
                if msg.error() or not msg.value():
                    continue
                try:
                    value = json.loads(msg.value())
                except ValueError:
                    continue
                if isinstance(value, dict):
                    self.observed.on(msg.topic(), msg.timestamp()[1], value)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


class Pipeline:
    """The processes of the demo, each restartable (chaos), logs under ``logs``."""

    def __init__(self, logs: Path, sim: SimulatorThread, journal: Path, tag: str) -> None:
        self.logs = logs
        self.proxies = [TcpProxy(sim.host, sim.port), TcpProxy(sim.host, sim.port)]
        self.web_port = free_port()
        #: the originator reads where the PBX listens from config.servers, its secret from settings
        self.env = ami_secret_env(SERVER)
        self.commands: dict[str, list[str]] = {
            "processors": ["processors", "--instance", "demo", "--web-port", str(free_port())],
            # a group (and journal) of this run's own, starting at the end of pbx.commands: what
            # earlier runs or benchmarks left unexecuted on this stack is not this run's to work off
            "originator": ["originator", "--journal", str(journal), "--group", f"demo-originator-{tag}"],
            "producer-a": sim.producer_args(SERVER, via=self.proxies[0]),
            "producer-b": sim.producer_args(SERVER, via=self.proxies[1]),
            "rating": ["rating"],
            "cdr-sink": ["cdr-sink", "--flush-interval-s", "0.5"],
            "web": ["web", "--port", str(self.web_port), "--user-rate", "60", "--number-rate", "10"],
        }
        self.ready_line = {
            "processors": "processors ready",
            "originator": "assigned pbx.commands partitions",
            "producer-a": "logged in",
            "producer-b": "logged in",
            "rating": "ready in",
            "cdr-sink": "",
            "web": "listening on",
        }
        self.procs: dict[str, CallbackProcess] = {}
        self.restarts: dict[str, int] = defaultdict(int)

    def start(self, name: str, wait: bool = True) -> None:
        n = self.restarts[name]
        self.procs[name] = CallbackProcess(
            self.commands[name], self.logs / f"{name}{'-' + str(n) if n else ''}.log", env=self.env
        ).start()
        if wait and self.ready_line[name]:
            # the worker first restores its tables from their changelogs: on a stack that kept the
            # sessions of earlier runs (a benchmark's, say) that takes minutes, and it says so
            timeout = START_TIMEOUT_S["processors"] if name == "processors" else START_TIMEOUT_S["other"]
            try:
                self.procs[name].wait_for_log(self.ready_line[name], timeout=timeout)
            except (TimeoutError, RuntimeError) as exc:
                raise DemoError(f"{name} did not start: {exc}") from None

    def kill_and_restart(self, name: str) -> None:
        self.procs[name].kill()
        self.restarts[name] += 1
        self.start(name, wait=False)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        for proxy in self.proxies:
            proxy.close()


def _place(pipeline: Pipeline, sim: SimulatorThread, call: Planned) -> str | None:
    """Place one planned callback; its callback id (None when the web API refused it)."""
    if call.did is not None:
        channel = sim.call(lambda: sim.sim.pbx.start_inbound(call.number, call.did, 30.0))
        return initiation_callback_id(SERVER, channel.uniqueid)
    body = json.dumps({"callback_number": call.number, "destination": call.destination}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{pipeline.web_port}/v1/callbacks",
        data=body,
        method="POST",
        headers={"X-API-Key": call.api_key or "", "Content-Type": "application/json"},
    )
    for _ in range(20):  # the web API may not have read the demo's users yet
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["callback_id"]
        except urllib.error.HTTPError as exc:
            if exc.code not in (401, 429, 503):
                return None
            time.sleep(float(exc.headers.get("Retry-After", "0.5")))
        except (urllib.error.URLError, OSError):  # not listening (yet, or any more)
            time.sleep(0.5)
    return None


def _chaos_plan(rng: random.Random, over_s: float) -> list[tuple[float, str]]:
    """(seconds from the start, action): two processors kills, two rater and two sink kills, one
    AMI connection cut and one 20 s ClickHouse pause, spread over the traffic."""
    actions = ["processors", "processors", "rating", "rating", "cdr-sink", "cdr-sink", "ami", "clickhouse"]
    return sorted((rng.uniform(over_s * 0.1, over_s * 0.9), a) for a in actions)


def _pause_clickhouse(seconds: float, note: Callable[[str], None]) -> None:
    from infra.stack import layout

    pid = layout().clickhouse_process().running_pid()
    if pid is None:
        note("clickhouse is not running: pause skipped")
        return
    os.kill(pid, signal.SIGSTOP)
    note(f"ClickHouse paused (SIGSTOP pid {pid}) for {seconds:.0f} s")

    def resume() -> None:
        os.kill(pid, signal.SIGCONT)
        note("ClickHouse resumed")

    threading.Timer(seconds, resume).start()


def execute(
    opts: DemoOptions, progress: Callable[[Observed, dict[str, str], list[str]], None]
) -> dict[str, Any]:
    """Run the demo; returns everything the report needs. ``progress`` is called twice a second."""
    from infra import stack as local_stack

    run_dir = opts.run_dir.resolve()
    tag = f"{int(time.time()) % 10**6:06d}"
    logs = run_dir / f"run-{tag}"  # every run its own logs: a line of an earlier run never counts
    logs.mkdir(parents=True, exist_ok=True)
    events: list[str] = []

    def note(text: str) -> None:
        events.append(f"{time.strftime('%H:%M:%S')} {text}")

    report = local_stack.up(provision=True)
    started_stack = any(s.action == "started" for s in report.services)
    sample = load_carrier_config(opts.carrier_file)
    demo = plan(sample, callbacks=opts.callbacks, seed=opts.seed, over_s=opts.over_s, tag=tag)
    sim = SimulatorThread(
        parse_scenario({"pbx": PBX, "subscribers": demo.subscribers}),
        action_log=logs / "actions.jsonl",
        speed=opts.speed,
    )
    pipeline: Pipeline | None = None
    collector: Collector | None = None
    try:
        carrier = dict(demo.carrier)
        carrier["servers"] = [
            {
                "server_id": SERVER,
                "name": "PBX simulator",
                "ami_host": sim.host,
                "ami_port": sim.port,
                "ami_username": "callback",
            }
        ]
        config = CarrierConfig.model_validate(carrier)
        from rating_stream.rater import read_balances

        opening = {k: (v.balance, v.sequence) for k, v in read_balances().items()}
        publish_config(config, transactional_id=f"demo-config-{tag}")
        observed = Observed()
        collector = Collector(observed)
        pipeline = Pipeline(logs, sim, logs / "originator.journal", tag)
        for name in pipeline.commands:
            pipeline.start(name)
        note("every process is up: " + ", ".join(pipeline.commands))
        ids: dict[int, str] = {}
        refused_by_web: list[int] = []
        rng = random.Random(opts.seed)
        chaos = _chaos_plan(rng, opts.over_s) if opts.chaos else []
        t0 = time.monotonic()
        pending = sorted(demo.callbacks, key=lambda c: c.at_s)
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = {}
            last_progress = 0.0
            while pending or chaos:
                now = time.monotonic() - t0
                while pending and pending[0].at_s <= now:
                    call = pending.pop(0)
                    futures[call.index] = pool.submit(_place, pipeline, sim, call)
                while chaos and chaos[0][0] <= now:
                    _at, action = chaos.pop(0)
                    if action == "ami":
                        pipeline.proxies[0].cut()
                        note("AMI connection of producer-a cut")
                    elif action == "clickhouse":
                        _pause_clickhouse(20.0, note)
                    else:
                        pipeline.kill_and_restart(action)
                        note(f"{action} SIGKILLed and restarted")
                if time.monotonic() - last_progress >= 0.5:
                    last_progress = time.monotonic()
                    progress(
                        observed,
                        {i: f.result() for i, f in futures.items() if f.done() and f.result()},
                        events,
                    )
                time.sleep(0.02)
            for index, future in futures.items():
                cb = future.result()
                if cb is None:
                    refused_by_web.append(index)
                else:
                    ids[index] = cb
        note(f"all {len(demo.callbacks)} callbacks placed in {time.monotonic() - t0:.0f} s")

        def settled() -> bool:
            progress(observed, ids, events)
            return all(observed.final(cb) is not None for cb in ids.values())

        try:
            wait_until(settled, opts.settle_s, "every callback's outcome", interval=0.5)
        except TimeoutError:
            note(f"not every callback had its outcome after {opts.settle_s:.0f} s")
        from infra.demo.report import wait_for_cdrs

        legs = sum(len(observed.legs.get(cb, {})) for cb in ids.values())
        stored = wait_for_cdrs(
            list(ids.values()), legs, opts.settle_s, lambda: progress(observed, ids, events)
        )
        note(f"{stored} of {legs} legs stored in ClickHouse")
        result = {
            "plan": demo,
            "ids": ids,
            "refused_by_web": refused_by_web,
            "observed": observed,
            "config": config,
            "opening": opening,
            "events": events,
            "tag": tag,
            "actions": sim.actions("Originate"),
            "restarts": dict(pipeline.restarts),
            "started_stack": started_stack,
            "seconds": time.monotonic() - t0,
        }
        from infra.demo.report import build

        result["outcome"] = build(result)  # reads balances and CDRs: before anything is torn down
        return result
    finally:
        if collector is not None:
            collector.close()
        if not opts.keep:
            if pipeline is not None:
                pipeline.stop()
            sim.close()
            if started_stack:
                local_stack.down()


def run_demo(opts: DemoOptions) -> int:
    """``callback demo``: run, report (console + Markdown), exit 0 only if everything is as expected."""
    from infra.demo.report import live_progress, render_console, render_markdown

    with live_progress(opts.callbacks) as progress:
        result = execute(opts, progress)
    outcome = result["outcome"]
    render_console(outcome)
    path = opts.run_dir / f"report-{result['tag']}.md"
    path.write_text(render_markdown(outcome, opts), encoding="utf-8")
    print(f"report written to {path}")
    return 0 if outcome.ok else 1


__all__ = ["DemoError", "DemoOptions", "DemoPlan", "Kind", "execute", "run_demo"]
