"""``callback bench processors``: what the real ``callback processors`` worker sustains on this
machine, how fast it answers, how late its retries fire, how fast it comes back after SIGKILL,
and how that compares with a bare Faust agent on the same broker.

Method (printed with the figures; everything runs against the running local stack, through real
processes and real Kafka, nothing is mocked):

1. **Bare agent** (reference, ``processors/bench_bare.py``): a minimal ``faust.App``
   (``at_least_once``, memory store, acks=all) in its own process, on its own topics (created with
   the AdminClient: input and output with 6 partitions, the table's compacted changelog with 6),
   one table get + update and one send per event. The input is filled before it starts; its rate
   is events / (last event handled - first event handled), both clocks in that process.
2. **Rig**: the PBX simulator (its own process, real AMI over TCP), ``callback producer``,
   ``callback originator`` and ``callback processors`` as subprocesses, and a carrier of this run's
   own numbers (``RunNumbers``): one DID whose dial plan authenticates by ANI, a pool of registered
   caller IDs, fraud-guard counters off (per-ANI, per-DID, one live session), fast subscribers
   (answer after 50 ms, key the destination 50 ms after the prompt, talk 300 ms). One callback:
   initiation -> originate leg A -> answer -> destination prompt -> dial B -> bridge -> hangups.
3. **Ramp**: after a short warm-up (not counted), the simulator offers initiations at 5, 10, 20,
   25, 30, ... per second, each rate for ``--step-s`` seconds. A rate *holds* when every offered
   callback completed, the completions kept up with the offered rate (>= 95 %), and p99
   initiation -> first Originate <= 100 ms; the sustained rate is the highest that held. The ramp
   goes on while completions keep up (so the throughput ceiling is found too) and stops at the
   first rate where they fall behind. Latencies are Kafka record timestamps (CreateTime, set by
   the producers on this host): ``callback.requests`` initiation -> ``pbx.commands``
   ``pbx.originate`` of the same callback, and ``pbx.events`` ``ivr.input`` -> the next
   ``pbx.commands`` record of that callback. Events per callback = records on the sessions agent's
   input topics (``callback.requests``, ``pbx.events``, ``callback.control``) for the step's
   callbacks, plus the ``pbx.events`` records without a callback id in the step's window, divided
   by the callbacks. CPU per process (and of the whole host) is sampled from /proc over each step.
4. **Pure layer**: the raw input records of the first step's callbacks are replayed in the bench
   process through decode -> ``apply_input`` -> encode outputs and session, without Kafka or
   Faust: the cost of our code per input, against the worker's CPU per input in the ramp.
5. **Recovery** (after the ramp, and again after the retries, with the bigger table they leave):
   the simulator offers callbacks; with sessions in flight the worker is SIGKILLed and restarted at
   once with the same ``--instance``. Recovery = kill -> first record the new worker publishes (any
   of its output topics), and kill -> its "processors ready" log line; its log gives the phases
   (start, group join, changelog replay). Every callback of that load must still reach an outcome,
   each leg-A attempt originated once on the PBX (the simulator's own action log).
6. **Retry lateness**: the bench acts as the PBX (the originator is stopped): it produces N web
   initiations, waits for their N Originates, then answers them ``busy`` at ``retry_pace`` a second
   (100), so N sessions go to ``scheduled`` and their retries come due at that pace, as a carrier's
   steady retries do (the Retry Time is chosen so that all N are pending before the first comes
   due; checked). Lateness = CreateTime of the attempt-2 ``pbx.originate`` - ``due_at`` of the
   ``scheduled`` transition on ``callback.sessions``.
7. ``events_per_callback`` and the bare rate give the goal: sustained callbacks/s >=
   0.7 * bare_events_per_s / events_per_callback.

The bench checks its own counts (every offered callback reached an outcome, every pending retry
fired exactly once, ...) and exits non-zero, after printing the figures, when one does not hold.
It needs the local stack (``callback stack up``) and says so in one line when Kafka does not answer.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.bench import load_average, machine
from infra.rig import CallbackProcess, ami_secret_env, producer_args

log = logging.getLogger(__name__)

GOAL_RATIO = 0.7
GOAL_P99_MS = 100.0
GOAL_RATE = 100.0
GOAL_RETRY_P99_MS = 250.0
GOAL_RECOVERY_S = 15.0
#: a rate holds when completions keep up with at least this share of the offered rate
KEEP_UP = 0.95
#: (callbacks/s, seconds) offered before the ramp and not counted: first connections, first sends
WARM_UP = (5.0, 5.0)
#: callbacks of the first ramp step whose input records are replayed through the pure layer
CAPTURE = 100

#: what the simulated subscribers do: fast, so the ramp measures the pipeline, not phone calls
SUBSCRIBER = {"answer_after": 0.05, "input_delay": 0.05, "talk_seconds": 0.3, "fail_after": 0.05}
TERMINAL = {"rejected", "completed", "failed_a", "failed_b", "auth_failed"}
OUTPUT_TOPICS = ("pbx.commands", "callback.sessions", "callback.legs", "callback.control")

METHOD = (
    "real processes on the local stack (PBX simulator process speaking AMI, callback producer, "
    "originator, processors); ANI dial plan, fraud-guard counters off, subscribers answer after "
    "50 ms, key the destination after 50 ms, talk 300 ms; ramp of offered initiations/s, a rate "
    "holds when all callbacks complete, completions keep up (>= 95 %) and p99 initiation->originate "
    "<= 100 ms; latencies from Kafka CreateTime (same host); retry lateness with the bench acting as "
    "the PBX (web initiations, busy results at 100/s so retries come due at that pace with all N "
    "pending, attempt-2 originate - due_at); recovery = "
    "SIGKILL -> first record of the restarted worker (same --instance); bare agent = minimal Faust "
    "app (at_least_once, the processors' table store, 1 get/update + 1 send per event) on its own "
    "6-partition topics"
)


class BenchError(RuntimeError):
    """The benchmark could not run (a process did not start, a phase timed out)."""


@dataclass
class BenchOptions:
    rates: tuple[float, ...] = (5, 10, 20, 25, 30, 35, 40, 50, 60, 80, 100, 130, 160, 200)
    step_s: float = 20.0
    retry_sizes: tuple[int, ...] = (1000, 10000)
    #: busy results (and so retries coming due) per second in the retry rounds
    retry_pace: float = 100.0
    recovery_rate: float = 10.0
    recovery_load_s: float = 20.0
    kill_after_s: float = 6.0
    bare_events: int = 50_000
    anis: int = 100
    #: SIGKILL once after the ramp too (not only after the retries, with the biggest table)
    recover_twice: bool = True
    #: experiments: the ramp (and the bare agent) only, no retry or recovery phase
    ramp_only: bool = False
    skip_bare: bool = False
    keep: bool = False
    profile: Path | None = None
    #: extra environment of the processors worker, for experiments (Faust reads its settings from
    #: the environment too, e.g. PRODUCER_LINGER=0.005); printed with the method
    worker_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def quick(cls, **changes: Any) -> BenchOptions:
        """Small sizes: a smoke test of every phase in about a minute and a half."""
        base = cls(
            rates=(5, 10),
            step_s=5.0,
            retry_sizes=(50, 200),
            recovery_rate=5.0,
            recovery_load_s=8.0,
            kill_after_s=3.0,
            bare_events=5000,
            anis=20,
            recover_twice=False,
        )
        for key, value in changes.items():
            setattr(base, key, value)
        return base


# --- small tools ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (from /proc), None when it is gone."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK


def machine_busy_seconds() -> float | None:
    """CPU seconds every process on the host has used since boot (all CPUs; /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / _CLK


def cpu_percent(
    before: dict[str, float | None], after: dict[str, float | None], seconds: float
) -> dict[str, float]:
    out = {}
    for name, b in before.items():
        a = after.get(name)
        if a is not None and b is not None and seconds > 0:
            out[name] = round(100.0 * (a - b) / seconds, 1)
    return out


def _producer(**overrides: Any) -> Any:
    from confluent_kafka import Producer

    from callback.kafka_io import producer_config

    return Producer(producer_config(**{"queue.buffering.max.messages": 500_000, **overrides}))


def _produce(producer: Any, topic: str, key: str, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key.encode(), value=value)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)


# --- the PBX simulator in its own process -------------------------------------------------------------


def _simulator_main(conn: Any, scenario: dict[str, Any], speed: float) -> None:
    import asyncio

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_simulate(conn, scenario, speed))


async def _simulate(conn: Any, scenario: dict[str, Any], speed: float) -> None:
    import asyncio

    from infra.pbx_sim.scenario import LoadProfile, parse_scenario
    from infra.pbx_sim.server import PbxSimulator, SimulatorOptions

    sim = PbxSimulator(parse_scenario(scenario), SimulatorOptions(port=0, speed=speed))
    await sim.start()
    conn.send((sim.host, sim.port))
    loop = asyncio.get_running_loop()
    while True:
        command, *args = await loop.run_in_executor(None, conn.recv)
        if command == "load":
            rate, seconds, did, anis, seed = args
            profile = LoadProfile(
                rate=rate, did=did, seconds=seconds, ani_pool=tuple(anis), ring_timeout=60.0, seed=seed
            )
            started = time.time()
            await sim._run_load(profile)
            conn.send((int(rate * seconds), started, time.time()))
        elif command == "originates":
            counts: Counter[str] = Counter()
            for entry in sim.action_log.of("Originate"):
                for variable in entry.get_all("Variable"):
                    for part in variable.split(","):
                        if part.startswith("CALLBACK_ID="):
                            counts[part[len("CALLBACK_ID=") :]] += 1
            conn.send(dict(counts))
        else:
            break
    await sim.stop()


class SimulatorProcess:
    """``infra.pbx_sim`` in a child process (its own interpreter: the simulator must not share a GIL
    with the bench's Kafka reader), driven over a pipe: offer a load, count the Originates."""

    def __init__(self, scenario: dict[str, Any], speed: float = 1.0) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_simulator_main, args=(child, scenario, speed), name="pbx-sim", daemon=True
        )
        self.proc.start()
        if not self._conn.poll(60):
            self.close()
            raise BenchError("the PBX simulator process did not start within 60 s")
        self.host, self.port = self._conn.recv()

    def offer(self, rate: float, seconds: float, did: str, anis: list[str], seed: int) -> None:
        """Start offering ``rate`` initiations/s for ``seconds`` (returns at once)."""
        self._conn.send(("load", rate, seconds, did, anis, seed))

    def offered(self, timeout: float) -> tuple[int, float, float]:
        """(calls offered, started, ended) of the load started last; waits for its end."""
        if not self._conn.poll(timeout):
            raise BenchError(f"the simulator did not finish offering its load within {timeout:.0f} s")
        return self._conn.recv()

    def originates(self) -> dict[str, int]:
        """Originate actions the PBX received, per CALLBACK_ID."""
        self._conn.send(("originates",))
        if not self._conn.poll(60):
            raise BenchError("the simulator did not report its Originates")
        return self._conn.recv()

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self._conn.send(("stop",))
            except (OSError, ValueError):
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# --- what the pipeline published ------------------------------------------------------------------------


@dataclass
class Trace:
    """One callback as seen on the topics (times: Kafka CreateTime, ms)."""

    init_ts: int | None = None
    inputs: int = 0
    #: (ts, type, command_id, attempt)
    commands: list[tuple[int, str, str, int]] = field(default_factory=list)
    ivr: list[int] = field(default_factory=list)
    #: (ts, sequence, to_state, attempt, due_at ms)
    transitions: list[tuple[int, int, str, int, int | None]] = field(default_factory=list)
    ticks: int = 0
    terminal: tuple[int, str] | None = None
    legs: set[str] = field(default_factory=set)
    input_types: Counter[str] = field(default_factory=Counter)

    def originates(self, attempt: int) -> list[tuple[int, str, str, int]]:
        return [c for c in self.commands if c[1] == "pbx.originate" and c[3] == attempt]


class Collector:
    """Reads the pipeline's topics from their current end in a thread, one ``Trace`` per callback."""

    INPUTS = ("callback.requests", "pbx.events", "callback.control")

    def __init__(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from callback.kafka_io import consumer_config

        self.lock = threading.Lock()
        self.traces: dict[str, Trace] = {}
        #: callback ids of initiations, in the order they arrived
        self.initiations: list[str] = []
        #: CreateTime of pbx.events records without a callback id
        self.unkeyed: list[int] = []
        #: CreateTime of every record the processors published
        self.outputs: list[int] = []
        #: raw input records kept for the pure-layer measurement: (topic, partition, offset, ts, value)
        self.captured: list[tuple[str, int, int, int, bytes]] = []
        self._capture: set[str] | None = None
        self._capture_limit = 0
        self._consumer = Consumer(consumer_config(f"bench-tail-{uuid.uuid4().hex[:8]}"))
        assignment = []
        for topic in (*self.INPUTS, "pbx.commands", "callback.sessions", "callback.legs"):
            meta = self._consumer.list_topics(topic, timeout=20).topics[topic]
            for p in meta.partitions:
                high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
                assignment.append(TopicPartition(topic, p, high))
        self._consumer.assign(assignment)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import orjson

        loads = orjson.loads
        while not self._stop.is_set():
            msgs = self._consumer.consume(2000, 0.1)
            if not msgs:
                continue
            with self.lock:
                for msg in msgs:
                    if msg.error() is not None or msg.value() is None:
                        continue
                    try:
                        topic, value = msg.topic(), msg.value()
                        v = loads(value)
                        self._add(topic, msg.timestamp()[1], v)
                        if self._capture is not None and topic in self.INPUTS:
                            self._keep(msg, v)
                    except Exception:  # a record we do not understand is not ours to judge
                        log.debug("bench collector: unreadable record on %s", msg.topic(), exc_info=True)

    def _keep(self, msg: Any, v: dict[str, Any]) -> None:
        cb = v.get("callback_id")
        capture = self._capture
        assert capture is not None
        if msg.topic() == "callback.requests" and len(capture) < self._capture_limit:
            capture.add(cb)
        if cb in capture:
            self.captured.append(
                (msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1], msg.value())
            )

    def capture(self, limit: int) -> None:
        """Keep the raw input records of the next ``limit`` callbacks (for ``pure_layer``)."""
        with self.lock:
            self._capture, self._capture_limit, self.captured = set(), limit, []

    def end_capture(self) -> list[tuple[str, int, int, int, bytes]]:
        with self.lock:
            self._capture = None
            return list(self.captured)

    def _trace(self, callback_id: str) -> Trace:
        trace = self.traces.get(callback_id)
        if trace is None:
            trace = self.traces[callback_id] = Trace()
        return trace

    def _add(self, topic: str, ts: int, v: dict[str, Any]) -> None:
        cb = v.get("callback_id")
        kind = v.get("type", "")
        if topic == "pbx.events" and cb is None:
            self.unkeyed.append(ts)
            return
        if cb is None:
            return
        t = self._trace(cb)
        if topic in self.INPUTS:
            t.inputs += 1
            t.input_types[kind] += 1
            if topic == "callback.requests":
                if t.init_ts is None:
                    t.init_ts = ts
                    self.initiations.append(cb)
            elif kind == "ivr.input":
                t.ivr.append(ts)
            elif kind == "callback.tick":
                t.ticks += 1
            if topic == "callback.control":
                self.outputs.append(ts)
        elif topic == "pbx.commands":
            self.outputs.append(ts)
            t.commands.append((ts, kind, v.get("command_id", ""), int(v.get("attempt") or 0)))
        elif topic == "callback.sessions":
            self.outputs.append(ts)
            due = v.get("due_at")
            state = v.get("to_state", "")
            t.transitions.append(
                (
                    ts,
                    int(v.get("sequence") or 0),
                    state,
                    int(v.get("attempt") or 0),
                    _ms(due) if due else None,
                )
            )
            if state in TERMINAL and t.terminal is None:
                t.terminal = (ts, state)
        elif topic == "callback.legs":
            self.outputs.append(ts)
            t.legs.add(v.get("leg_id", ""))

    def new_initiations(self, start: int, prefix: str) -> tuple[int, list[str]]:
        """(end index, ids of initiations since index ``start`` whose id starts with ``prefix``)."""
        with self.lock:
            ids = self.initiations[start:]
            return start + len(ids), [cb for cb in ids if cb.startswith(prefix)]

    def count(self) -> int:
        with self.lock:
            return len(self.initiations)

    def all(self, ids: list[str], predicate: Callable[[Trace], bool]) -> bool:
        """Whether every one of ``ids`` has a trace that satisfies ``predicate`` (checked under the
        lock, without copies: cheap enough to poll for 10,000 callbacks)."""
        with self.lock:
            traces = self.traces
            for cb in ids:
                t = traces.get(cb)
                if t is None or not predicate(t):
                    return False
            return True

    def snapshot(self, ids: list[str]) -> dict[str, Trace]:
        """Copies of the traces of ``ids`` (only those seen)."""
        with self.lock:
            out = {}
            for cb in ids:
                t = self.traces.get(cb)
                if t is not None:
                    out[cb] = Trace(
                        t.init_ts,
                        t.inputs,
                        list(t.commands),
                        list(t.ivr),
                        list(t.transitions),
                        t.ticks,
                        t.terminal,
                        set(t.legs),
                        Counter(t.input_types),
                    )
            return out

    def unkeyed_between(self, start_ms: int, end_ms: int) -> int:
        with self.lock:
            return sum(1 for ts in self.unkeyed if start_ms <= ts <= end_ms)

    def outputs_seen(self) -> int:
        with self.lock:
            return len(self.outputs)

    def first_output_after(self, ms: int, start: int = 0) -> int | None:
        """The earliest CreateTime >= ``ms`` among the outputs read since index ``start``."""
        with self.lock:
            later = [ts for ts in self.outputs[start:] if ts >= ms]
        return min(later) if later else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


# --- the rig ------------------------------------------------------------------------------------------


def carrier(tag: str, server: str, host: str, port: int, did: str, anis: list[str]) -> dict[str, Any]:
    owner, user = f"owner-{tag}", f"bench-{tag}"
    common = {
        "callback_server_id": server,
        "callback_user_id": owner,
        "callback_device_id": f"owner-dev-{tag}",
        "wait_time_s": 5,
        "retry_time_s": 1,
        "max_retries": 1,
        "initiation_ring_s": 0,
        "pin_attempts": 3,
        "busy_ivr": "busy-msg",
        "failed_ivr": "failed-msg",
        "active_for_users": True,
        "max_initiations_per_ani_per_minute": 0,
        "max_initiations_per_did_per_minute": 0,
        "one_live_session_per_ani": False,
    }
    return {
        "callback_settings": {
            "scope": "system",
            "send_device_cid": False,
            "send_source_as_cid": False,
            "default_cid": "18005550100",
            **common,
        },
        "servers": [
            {
                "server_id": server,
                "ami_host": host,
                "ami_port": port,
                "ami_username": "callback",
            }
        ],
        "tariffs": [
            {"tariff_id": f"origins-{tag}", "rates": [{"prefix": "234", "rate_per_minute": "0.20"}]},
            {
                "tariff_id": f"retail-{tag}",
                "rates": [
                    {"prefix": "234", "rate_per_minute": "0.20"},
                    {"prefix": "34", "rate_per_minute": "0.08", "increment_s": 1},
                ],
            },
        ],
        "users": [
            {
                "user_id": owner,
                "name": "owner",
                "tariff_id": f"origins-{tag}",
                "prepaid": False,
                "credit_limit": "1000000",
            },
            {"user_id": user, "name": "bench", "tariff_id": f"retail-{tag}", "balance": "1000000"},
        ],
        "devices": [
            {"device_id": f"owner-dev-{tag}", "user_id": owner},
            {"device_id": f"bench-dev-{tag}", "user_id": user, "registered_numbers": anis},
        ],
        "dialplans": [
            {
                "dialplan_id": f"ani-{tag}",
                "auth_method": "ani",
                "hangup_cause": 21,
                "settings": {"scope": f"dialplan:ani-{tag}", **common},
            }
        ],
        "dids": [{"number": did, "dialplan_id": f"ani-{tag}", "pbx_id": server}],
    }


class Rig:
    """Simulator, producer, originator and processors worker for one benchmark run."""

    def __init__(self, tmp: Path, opts: BenchOptions) -> None:
        from callback.publish import publish_config
        from infra.rig import PBX, RunNumbers
        from schemas.carrier_config import CarrierConfig

        self.tmp = tmp
        self.opts = opts
        self.numbers = RunNumbers()
        self.block = self.numbers.block
        self.tag = uuid.uuid4().hex[:8]
        self.server = f"pbx-{self.tag}"
        self.did = self.numbers.did(1)
        self.dest = self.numbers.dest(1)
        self.anis = [f"2348{self.block}{i:03d}" for i in range(opts.anis)]
        self.user_id = f"bench-{self.tag}"
        self.worker: Any = None
        #: raw input records of some callbacks of the ramp (``Collector.capture``)
        self.captured: list[tuple[str, int, int, int, bytes]] = []
        self.originator: Any = None
        self.producer: Any = None
        self._workers = 0
        self._originators = 0
        self.sim = SimulatorProcess({"pbx": PBX, "defaults": {**SUBSCRIBER, "destination": self.dest}})
        try:
            data = carrier(self.tag, self.server, self.sim.host, self.sim.port, self.did, self.anis)
            self.config = CarrierConfig.model_validate(data)
            publish_config(self.config, transactional_id=f"bench-config-{self.tag}")
            self.worker = self.start_worker(profile=opts.profile)
            self.originator = self.start_originator()
            self.producer = CallbackProcess(
                producer_args(self.server, self.sim.host, self.sim.port), tmp / "producer.log"
            ).start()
            self.originator.wait_for_log("assigned pbx.commands partitions", timeout=90)
            self.producer.wait_for_log("logged in", timeout=90)
            self.wait_worker_ready(self.worker, timeout=300)
        except BaseException:
            self.close()
            raise

    # --- processes ---
    def start_worker(self, profile: Path | None = None) -> Any:
        from infra.rig import free_port

        self._workers += 1
        # one instance name for every run: a static member that left with a previous run is
        # replaced at once, not waited for (its session timeout) and rebalanced away mid-ramp
        args = [
            "processors",
            "--instance",
            "bench",
            "--web-port",
            str(free_port()),
            "--data-dir",
            str(self.tmp / "processors-data"),
        ]
        log_path = self.tmp / f"processors{self._workers}.log"
        if profile is None:
            return CallbackProcess(args, log_path, env=self.opts.worker_env).start()
        return CallbackProcess(
            args, log_path, self.opts.worker_env, interpreter_args=["-m", "cProfile", "-o", str(profile)]
        ).start()

    @staticmethod
    def wait_worker_ready(worker: Any, timeout: float) -> None:
        worker.wait_for_log("processors ready", timeout=timeout)
        worker.wait_for_log("reference data loaded:", timeout=timeout)

    def start_originator(self) -> Any:
        self._originators += 1
        n = self._originators
        return CallbackProcess(
            [
                "originator",
                "--journal",
                str(self.tmp / f"originator{n}.journal"),
                "--group",
                f"bench-orig-{self.tag}-{n}",
                "--start-at",
                "latest",
            ],
            self.tmp / f"originator{n}.log",
            env=ami_secret_env(self.server),
        ).start()

    def pids(self) -> dict[str, int | None]:
        from infra.stack import layout

        def pid(p: Any) -> int | None:
            return p.proc.pid if p is not None and p.proc.poll() is None else None

        return {
            "processors": pid(self.worker),
            "producer": pid(self.producer),
            "originator": pid(self.originator),
            "simulator": self.sim.proc.pid,
            "kafka": layout().kafka_process().running_pid(),
            "bench": os.getpid(),
        }

    def cpu(self) -> dict[str, float | None]:
        """CPU seconds of each process of the rig, and ``machine``: of all processes on the host."""
        return {
            **{name: cpu_seconds(pid) for name, pid in self.pids().items()},
            "machine": machine_busy_seconds(),
        }

    def publish_system_settings(self, **changes: Any) -> None:
        """A new ``system`` record on ``config.callback_settings`` (web callbacks follow it)."""
        from schemas.topics import CONFIG_SETTINGS

        settings = self.config.callback_settings.model_copy(update=changes)
        producer = _producer()
        _produce(producer, CONFIG_SETTINGS.name, "system", settings.model_dump_json().encode())
        if producer.flush(30) != 0:
            raise BenchError("could not publish the callback settings")

    def close(self) -> None:
        for process in (self.producer, self.originator, self.worker):
            if process is not None:
                try:
                    process.stop()
                except Exception:
                    log.exception("stopping %s", process.args[0])
        self.sim.close()


# --- 1 + 2: the ramp ------------------------------------------------------------------------------------


@dataclass
class Step:
    rate: float
    seconds: float
    offered: int = 0
    offered_per_s: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    reached: int = 0
    completed: int = 0
    legs: int = 0
    init_to_originate: list[float] = field(default_factory=list, repr=False)
    ivr_to_command: list[float] = field(default_factory=list, repr=False)
    completions_per_s: float = 0.0
    events_per_callback: float = 0.0
    keyed_events: int = 0
    unkeyed_events: int = 0
    inputs: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    #: completions kept up with the offered rate, every callback completed
    kept_up: bool = False
    #: ... and p99 initiation -> originate within the goal
    held: bool = False
    why: str = ""

    def p(self, what: str, q: float) -> float | None:
        return percentile(self.init_to_originate if what == "orig" else self.ivr_to_command, q)

    def summary(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "seconds": self.seconds,
            "offered": self.offered,
            "offered_per_s": round(self.offered_per_s, 2),
            "outcomes": self.outcomes,
            "reached_outcome": self.reached,
            "completed": self.completed,
            "legs": self.legs,
            "initiation_to_originate_p50_ms": self.p("orig", 50),
            "initiation_to_originate_p99_ms": self.p("orig", 99),
            "initiation_to_originate_max_ms": self.p("orig", 100),
            "ivr_to_command_p50_ms": self.p("ivr", 50),
            "ivr_to_command_p99_ms": self.p("ivr", 99),
            "completions_per_s": round(self.completions_per_s, 2),
            "events_per_callback": round(self.events_per_callback, 2),
            "keyed_events": self.keyed_events,
            "unkeyed_events": self.unkeyed_events,
            "inputs_per_callback": {k: round(v / self.offered, 2) for k, v in sorted(self.inputs.items())}
            if self.offered
            else {},
            "cpu_percent": self.cpu,
            "kept_up": self.kept_up,
            "held": self.held,
            "why": self.why,
        }


def _analyse(step: Step, traces: dict[str, Trace], ids: list[str], col: Collector) -> None:
    outcomes: Counter[str] = Counter()
    durations, first_init, last_init, last_end = [], None, None, None
    for cb in ids:
        t = traces.get(cb)
        if t is None or t.init_ts is None:
            continue
        first_init = t.init_ts if first_init is None else min(first_init, t.init_ts)
        last_init = t.init_ts if last_init is None else max(last_init, t.init_ts)
        step.keyed_events += t.inputs
        step.inputs.update(t.input_types)
        step.legs += len(t.legs)
        originates = t.originates(1)
        if originates:
            step.init_to_originate.append(float(min(o[0] for o in originates) - t.init_ts))
        for ivr in t.ivr[:1]:
            after = [c[0] for c in t.commands if c[0] >= ivr]
            if after:
                step.ivr_to_command.append(float(min(after) - ivr))
        if t.terminal is not None:
            outcomes[t.terminal[1]] += 1
            durations.append(t.terminal[0] - t.init_ts)
            last_end = t.terminal[0] if last_end is None else max(last_end, t.terminal[0])
    step.outcomes = dict(outcomes)
    step.reached = sum(outcomes.values())
    step.completed = outcomes.get("completed", 0)
    n = len(ids)
    if first_init is not None and last_init is not None and n > 1 and last_init > first_init:
        step.offered_per_s = (n - 1) / ((last_init - first_init) / 1000.0)
    if durations and last_end is not None and first_init is not None:
        span = (last_end - first_init - min(durations)) / 1000.0
        step.completions_per_s = (step.reached - 1) / span if span > 0 and step.reached > 1 else 0.0
        step.unkeyed_events = col.unkeyed_between(first_init, last_end + 2000)
        step.inputs["(pbx.events without callback id)"] = step.unkeyed_events
    step.events_per_callback = (step.keyed_events + step.unkeyed_events) / n if n else 0.0


def run_step(rig: Rig, col: Collector, rate: float, seconds: float, say: Callable[[str], None]) -> Step:
    step = Step(rate, seconds)
    prefix = f"{rig.server}."
    start = col.count()
    cpu0, t0 = rig.cpu(), time.monotonic()
    rig.sim.offer(rate, seconds, rig.did, rig.anis, seed=int(rate * 1000))
    step.offered, _, _ = rig.sim.offered(seconds + 120)
    step.cpu = cpu_percent(cpu0, rig.cpu(), time.monotonic() - t0)

    def initiated() -> list[str] | None:
        _, ids = col.new_initiations(start, prefix)
        return ids if len(ids) >= step.offered else None

    try:
        ids = _wait(initiated, 60, f"{step.offered} initiations on callback.requests")
    except BenchError:
        _, ids = col.new_initiations(start, prefix)
        step.why = f"only {len(ids)} of {step.offered} initiations reached callback.requests"

    def finished(t: Trace) -> bool:
        return t.terminal is not None and (t.terminal[1] != "completed" or len(t.legs) >= 3)

    def all_done() -> bool:
        return col.all(ids, finished)

    settle = max(15.0, seconds)
    try:
        _wait(all_done, settle, "the outcomes", interval=0.25)
        time.sleep(1.0)  # the last hangup events of the last callbacks
    except BenchError:
        step.why = (
            step.why or f"not every callback reached its outcome within {settle:.0f} s of the load's end"
        )
        say(f"  rate {rate:g}/s: {step.why}; waiting for the backlog to drain")
        try:
            _wait(all_done, 240, "the backlog to drain", interval=0.5)
        except BenchError:
            pass
    _analyse(step, col.snapshot(ids), ids, col)
    p99 = step.p("orig", 99)
    reasons = []
    if step.why:
        reasons.append(step.why)
    if step.completed != step.offered:
        reasons.append(f"{step.completed} of {step.offered} completed")
    if step.offered_per_s < 0.9 * rate:
        reasons.append(f"the simulator offered only {step.offered_per_s:.1f}/s")
    if step.completions_per_s < KEEP_UP * min(rate, step.offered_per_s or rate):
        reasons.append(f"completions {step.completions_per_s:.1f}/s fell behind")
    step.kept_up = not reasons
    if p99 is None or p99 > GOAL_P99_MS:
        reasons.append(f"p99 initiation->originate {_fmt(p99)} ms > {GOAL_P99_MS:.0f} ms")
    step.held = not reasons
    step.why = "; ".join(reasons)
    return step


def ramp(rig: Rig, col: Collector, opts: BenchOptions, say: Callable[[str], None]) -> list[Step]:
    """The rates in order, until completions no longer keep up (a rate whose latency is too high
    does not hold, but the ramp goes on to find the throughput too)."""
    say(f"warm-up: {WARM_UP[0]:g} callbacks/s for {WARM_UP[1]:g} s (not counted)")
    warm = run_step(rig, col, WARM_UP[0], WARM_UP[1], say)
    if warm.reached != warm.offered:
        raise BenchError(
            f"warm-up: {warm.reached} of {warm.offered} callbacks reached an outcome: {warm.why}"
        )
    steps = []
    for i, rate in enumerate(opts.rates):
        say(f"ramp: offering {rate:g} callbacks/s for {opts.step_s:g} s")
        if i == 0:
            col.capture(CAPTURE)
        step = run_step(rig, col, rate, opts.step_s, say)
        if i == 0:
            rig.captured = col.end_capture()
        steps.append(step)
        say(_step_line(step))
        if not step.kept_up:
            break
        time.sleep(1.0)
    return steps


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.0f}{unit}"


def _step_line(s: Step) -> str:
    cpu = " ".join(f"{k} {v:.0f}%" for k, v in s.cpu.items())
    return (
        f"  {s.rate:g}/s: offered {s.offered} ({s.offered_per_s:.1f}/s), completed {s.completed}, "
        f"outcomes {s.outcomes}, initiation->originate p50 {_fmt(s.p('orig', 50))} ms p99 "
        f"{_fmt(s.p('orig', 99))} ms, ivr->command p50 {_fmt(s.p('ivr', 50))} ms p99 "
        f"{_fmt(s.p('ivr', 99))} ms, completions {s.completions_per_s:.1f}/s, events/callback "
        f"{s.events_per_callback:.2f}; CPU {cpu}; {'held' if s.held else 'NOT held: ' + s.why}"
    )


# --- 3: retry lateness ----------------------------------------------------------------------------------


@dataclass
class RetryRound:
    pending: int
    retry_time_s: int
    lateness_ms: list[float] = field(default_factory=list, repr=False)
    busy_burst_s: float = 0.0
    scheduled_in_s: float = 0.0
    all_pending_before_due: bool = False
    pending_margin_s: float = 0.0
    fired: int = 0
    distinct: int = 0
    originate_records: int = 0
    ticks: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "retry_time_s": self.retry_time_s,
            "lateness_p50_ms": percentile(self.lateness_ms, 50),
            "lateness_p99_ms": percentile(self.lateness_ms, 99),
            "lateness_max_ms": percentile(self.lateness_ms, 100),
            "busy_burst_s": round(self.busy_burst_s, 3),
            "all_scheduled_after_s": round(self.scheduled_in_s, 3),
            "all_pending_before_due": self.all_pending_before_due,
            "pending_margin_s": round(self.pending_margin_s, 3),
            "retries_fired": self.fired,
            "attempt2_originate_commands": self.distinct,
            "attempt2_originate_records": self.originate_records,
            "attempt2_originate_copies": self.originate_records - self.distinct,
            "ticks": self.ticks,
            "outcomes": self.outcomes,
            "problems": self.problems,
        }


def retry_round(
    rig: Rig, col: Collector, n: int, retry_s: int, say: Callable[[str], None], pace: float = 0.0
) -> RetryRound:
    """``n`` sessions pending a retry at once; the bench plays the PBX. The busy results come at
    ``pace`` per second (0: in one burst), so the retries come due at that pace too, every one of
    them still pending when the first is due (Retry Time longer than the busy results take)."""
    from producers.action_ids import channel_id_for
    from schemas.callback import CallbackInitiation, InitiationOrigin, LegType
    from schemas.pbx_events import OriginateOutcome, OriginateResult
    from schemas.topics import CALLBACK_REQUESTS, PBX_EVENTS

    result = RetryRound(n, retry_s)
    run = uuid.uuid4().hex[:6]
    ids = [f"bench-{rig.tag}-r{run}-{i:05d}" for i in range(n)]
    numbers = {cb: f"2349{rig.block}{i:05d}" for i, cb in enumerate(ids)}
    # Wait Time at its maximum: the sessions wait for the bench's busy results (which come over
    # n / pace seconds) without their originate watchdog (Wait Time + 30 s) deciding first
    rig.publish_system_settings(retry_time_s=retry_s, max_retries=1, wait_time_s=300)
    time.sleep(2.0)  # the worker polls the config topics every 0.25 s
    producer = _producer()
    now = datetime.now(UTC)
    for cb in ids:
        init = CallbackInitiation(
            source="bench/web",
            callback_id=cb,
            origin=InitiationOrigin.WEB,
            callback_number=numbers[cb],
            user_id=rig.user_id,
            received_at=now,
        )
        _produce(producer, CALLBACK_REQUESTS.name, cb, init.to_bytes())
    producer.flush(60)

    def originated(attempt: int) -> bool:
        return col.all(ids, lambda t: bool(t.terminal or t.originates(attempt)))

    _wait(lambda: originated(1), 120 + n / 20, f"{n} first Originates", interval=0.5)
    traces = col.snapshot(ids)
    refused = {cb: t.terminal for cb, t in traces.items() if not t.originates(1)}
    if refused:
        raise BenchError(f"{len(refused)} web initiations did not originate: {list(refused.items())[:3]}")

    def busy(cb: str, command_id: str, attempt: int) -> bytes:
        return OriginateResult(
            source="bench/fake-pbx",
            pbx_id=rig.server,
            channel=f"Local/{numbers[cb]}@callback-out;1",
            uniqueid=channel_id_for(command_id),
            callback_id=cb,
            leg=LegType.A,
            attempt=attempt,
            occurred_at=datetime.now(UTC),
            reason_code=5,
            outcome=OriginateOutcome.BUSY,
            command_id=command_id,
        ).to_bytes()

    values = [(cb, busy(cb, traces[cb].originates(1)[0][2], 1)) for cb in ids]
    burst0 = time.time()
    for i, (cb, value) in enumerate(values):
        if pace:
            wait = burst0 + i / pace - time.time()
            if wait > 0:
                producer.poll(0)
                time.sleep(wait)
        _produce(producer, PBX_EVENTS.name, cb, value)
    producer.flush(60)
    burst1 = time.time()
    result.busy_burst_s = burst1 - burst0
    say(f"  {n} busy results produced in {result.busy_burst_s:.2f} s; waiting for {n} scheduled retries")

    def scheduled() -> bool:
        return col.all(ids, lambda t: any(tr[2] == "scheduled" and tr[3] == 2 for tr in t.transitions))

    _wait(scheduled, retry_s + 120 + n / 20, f"{n} scheduled retries", interval=0.5)
    traces = col.snapshot(ids)
    sched = {
        cb: next(tr for tr in t.transitions if tr[2] == "scheduled" and tr[3] == 2)
        for cb, t in traces.items()
    }

    last_scheduled = max(tr[0] for tr in sched.values())
    first_due = min(tr[4] or 0 for tr in sched.values())
    result.scheduled_in_s = (last_scheduled - burst0 * 1000) / 1000.0
    result.pending_margin_s = (first_due - last_scheduled) / 1000.0
    result.all_pending_before_due = first_due > last_scheduled
    spread = (max(tr[4] or 0 for tr in sched.values()) - first_due) / 1000.0
    if pace and spread < 0.8 * (n - 1) / pace:
        result.problems.append(
            f"the retries came due over {spread:.1f} s, not at the pace of the busy results "
            f"({(n - 1) / pace:.1f} s): something else scheduled them"
        )
    say(
        f"  all {n} scheduled {result.scheduled_in_s:.2f} s after the burst; due times spread over "
        f"{spread:.2f} s; first due {result.pending_margin_s:.2f} s after the last was scheduled"
    )
    _wait(lambda: originated(2), retry_s + 180 + n / 10, f"{n} attempt-2 Originates", interval=0.5)
    time.sleep(2.0)  # a duplicate would come now
    traces = col.snapshot(ids)
    for cb, t in traces.items():
        second = t.originates(2)
        result.originate_records += len(second)
        result.ticks += t.ticks
        if second:
            result.fired += 1
            result.lateness_ms.append(float(min(o[0] for o in second) - (sched[cb][4] or 0)))
    if result.fired != n:
        result.problems.append(f"{n - result.fired} of {n} pending retries did not fire")
    # a retry fires once when its session publishes one attempt-2 Originate (one command id); the
    # same command published again (same id, an at-least-once copy the originator drops) is counted
    # apart, as are the ticks (the timer sweep re-sends a tick still unanswered after 2 s)
    twice = sum(1 for t in traces.values() if len({o[2] for o in t.originates(2)}) > 1)
    result.distinct = sum(len({o[2] for o in t.originates(2)}) for t in traces.values())
    if twice:
        result.problems.append(f"{twice} sessions fired their retry with more than one Originate command")
    if not result.all_pending_before_due:
        result.problems.append("some retries came due before all were pending (Retry Time too short)")
    # the second attempt is busy too: Max Retries 1, so every session ends failed_a
    for cb in ids:
        _produce(producer, PBX_EVENTS.name, cb, busy(cb, traces[cb].originates(2)[0][2], 2))
    producer.flush(60)

    _wait(
        lambda: col.all(ids, lambda t: t.terminal is not None),
        120 + n / 20,
        f"{n} sessions to end failed_a",
        interval=0.5,
    )
    traces = col.snapshot(ids)
    result.outcomes = dict(Counter(t.terminal[1] for t in traces.values() if t.terminal))
    if result.outcomes.get("failed_a") != n:
        result.problems.append(f"outcomes {result.outcomes}, expected {n} failed_a")
    return result


# --- 4: recovery -----------------------------------------------------------------------------------------


@dataclass
class Recovery:
    rate: float
    when: str = ""
    in_flight: int = 0
    sessions_in_table: int | None = None
    changelog_records: int = 0
    first_output_s: float | None = None
    ready_s: float | None = None
    callbacks: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    originate_counts: dict[int, int] = field(default_factory=dict)
    #: what the restarted worker's log says it did when, in seconds since the kill
    phases: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def replay_rate(self) -> float | None:
        start, done = self.phases.get("changelog replay started"), self.phases.get("changelog replay done")
        if start is None or done is None or done <= start:
            return None
        return round(self.changelog_records / (done - start), 1)

    def summary(self) -> dict[str, Any]:
        return {
            "when": self.when,
            "rate": self.rate,
            "in_flight_at_kill": self.in_flight,
            "sessions_in_table_after_restart": self.sessions_in_table,
            "sessions_changelog_records": self.changelog_records,
            "kill_to_first_output_s": None if self.first_output_s is None else round(self.first_output_s, 2),
            "kill_to_ready_log_s": None if self.ready_s is None else round(self.ready_s, 2),
            "callbacks": self.callbacks,
            "outcomes": self.outcomes,
            "originates_per_callback": {str(k): v for k, v in self.originate_counts.items()},
            "worker_log_phases_s": self.phases,
            "changelog_replay_records_per_s": self.replay_rate(),
            "problems": self.problems,
        }


#: log lines of a starting worker (Faust's and ours), in the order they come
PHASES = (
    ("worker started", "[^Worker]: Starting"),
    ("group joined", "Joined group"),
    ("changelog replay started", "Restoring state from changelog topics"),
    ("changelog replay done", "Recovery complete"),
    ("processors ready", "processors ready"),
    ("reference data loaded", "reference data loaded:"),
)


def worker_phases(log_text: str, since: float) -> dict[str, float]:
    """Seconds from ``since`` (epoch) to the first log line of each phase (local-time stamps)."""
    import re

    out = {}
    for name, marker in PHASES:
        at = log_text.find(marker)
        if at < 0:
            continue
        line_start = log_text.rfind("\n", 0, at) + 1
        stamp = re.match(r"\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", log_text[line_start:])
        if stamp:
            when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out[name] = round(when - since, 2)
    return out


def changelog_records() -> int:
    from confluent_kafka import Consumer, TopicPartition

    from callback.kafka_io import consumer_config
    from schemas.topics import SESSIONS_CHANGELOG

    consumer = Consumer(consumer_config(f"bench-watermarks-{uuid.uuid4().hex[:6]}"))
    try:
        total = 0
        for p in range(SESSIONS_CHANGELOG.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(SESSIONS_CHANGELOG.name, p), timeout=20)
            total += high - low
        return total
    finally:
        consumer.close()


def recovery(
    rig: Rig, col: Collector, opts: BenchOptions, rate: float, say: Callable[[str], None]
) -> Recovery:
    import re

    result = Recovery(rate)
    prefix = f"{rig.server}."
    start = col.count()
    rig.sim.offer(rate, opts.recovery_load_s, rig.did, rig.anis, seed=4242)
    time.sleep(opts.kill_after_s)
    _, ids = col.new_initiations(start, prefix)
    result.in_flight = sum(1 for t in col.snapshot(ids).values() if t.terminal is None)
    result.changelog_records = changelog_records()
    say(
        f"  SIGKILL of the worker with {result.in_flight} callbacks in flight "
        f"({result.changelog_records:,} records in the sessions changelog)"
    )
    seen = col.outputs_seen()
    killed = time.time()
    rig.worker.kill()
    rig.worker = rig.start_worker()
    killed_ms = int(killed * 1000)
    ready_at = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if ready_at is None and "processors ready" in rig.worker.log_text():
            ready_at = time.time()
        first = col.first_output_after(killed_ms, seen)
        if ready_at is not None and first is not None:
            result.first_output_s = (first - killed_ms) / 1000.0
            break
        if rig.worker.proc.poll() is not None:
            raise BenchError(f"the restarted worker exited:\n{rig.worker.log_text()[-3000:]}")
        time.sleep(0.05)
    result.ready_s = None if ready_at is None else ready_at - killed
    text = rig.worker.log_text()
    match = re.search(r"processors ready: .*?, (\d+) sessions in table", text)
    result.sessions_in_table = int(match.group(1)) if match else None
    result.phases = worker_phases(text, killed)
    if result.first_output_s is None:
        result.problems.append("the restarted worker published nothing within 300 s")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.phases.items())
    say(
        f"  restarted: first output after {_fmt_s(result.first_output_s)}, 'processors ready' after "
        f"{_fmt_s(result.ready_s)} ({result.sessions_in_table} sessions in its table); since the kill: "
        f"{phases}"
    )
    offered, _, _ = rig.sim.offered(opts.recovery_load_s + 120)
    _wait(lambda: len(col.new_initiations(start, prefix)[1]) >= offered, 60, f"{offered} initiations")
    _, ids = col.new_initiations(start, prefix)
    result.callbacks = len(ids)
    try:
        _wait(
            lambda: col.all(ids, lambda t: t.terminal is not None),
            240,
            "every callback of the recovery load to reach its outcome",
            interval=0.5,
        )
    except BenchError as exc:
        result.problems.append(str(exc))
    traces = col.snapshot(ids)
    result.outcomes = dict(Counter(t.terminal[1] if t.terminal else "none" for t in traces.values()))
    reached = sum(1 for t in traces.values() if t.terminal)
    if reached != offered:
        result.problems.append(f"{reached} of {offered} callbacks reached an outcome after the restart")
    originates = rig.sim.originates()
    result.originate_counts = dict(Counter(originates.get(cb, 0) for cb in ids))
    twice = [cb for cb in ids if originates.get(cb, 0) > 1]
    if twice:
        result.problems.append(
            f"{len(twice)} callbacks were originated more than once on the PBX: {twice[:3]}"
        )
    return result


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


# --- 5: the bare agent ----------------------------------------------------------------------------------


def bare_agent(events: int, tmp: Path, keep: bool, say: Callable[[str], None]) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient, NewTopic

    from callback.kafka_io import BROKER_DEFAULT_RF, base_config
    from infra.rig import REPO_ROOT, free_port
    from processors.bench_bare import PARTITIONS, changelog_topic
    from schemas.pbx_events import ChannelHangup

    run = uuid.uuid4().hex[:8]
    app_id = f"bench-bare-{run}"
    source, sink, changelog = f"bench.{run}.bare-in", f"bench.{run}.bare-out", changelog_topic(app_id)
    admin = AdminClient(base_config())
    specs = [
        NewTopic(source, PARTITIONS, BROKER_DEFAULT_RF),
        NewTopic(sink, PARTITIONS, BROKER_DEFAULT_RF),
        NewTopic(changelog, PARTITIONS, BROKER_DEFAULT_RF, config={"cleanup.policy": "compact"}),
    ]
    for f in admin.create_topics(specs).values():
        f.result()
    proc = None
    try:
        producer = _producer()
        t0 = time.monotonic()
        for i in range(events):
            key = f"bench-bare-{i % 5000}"
            value = ChannelHangup(
                source="bench/bare",
                pbx_id="pbx-bench",
                channel=f"PJSIP/carrier-{i:08x}",
                uniqueid=f"bench-{i}",
                linkedid=f"bench-{i}",
                callback_id=key,
                occurred_at=datetime.now(UTC),
                q850_cause=16,
                cause_text="Normal Clearing",
            )
            _produce(producer, source, key, value.to_bytes())
        producer.flush(120)
        say(f"bare agent: {events} events produced to {source} in {time.monotonic() - t0:.1f} s (not timed)")
        result_file = tmp / f"bare-{run}.json"
        log_path = tmp / "bare.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "processors.bench_bare",
                    "--app-id",
                    app_id,
                    "--input",
                    source,
                    "--output",
                    sink,
                    "--events",
                    str(events),
                    "--result",
                    str(result_file),
                    "--web-port",
                    str(free_port()),
                    "--data-dir",
                    str(tmp / "bare-data"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )

        def done() -> bool:
            if proc.poll() is not None:
                raise BenchError(
                    f"the bare agent exited with {proc.returncode}:\n"
                    f"{log_path.read_text(errors='replace')[-3000:]}"
                )
            return result_file.exists()

        from infra.stack import layout

        kafka_pid = layout().kafka_process().running_pid()
        _wait(
            lambda: done() or result_file.with_suffix(".first").exists(),
            600,
            "the bare agent's first event",
            interval=0.02,
        )
        kafka0, t_first = cpu_seconds(kafka_pid), time.monotonic()
        _wait(done, 600, f"the bare agent to handle {events} events", interval=0.05)
        kafka1, t_last = cpu_seconds(kafka_pid), time.monotonic()
        data = json.loads(result_file.read_text())
        seconds = data["last"] - data["first"]
        rate = data["events"] / seconds if seconds > 0 else 0.0
        agent_cpu = 100.0 * data["cpu_s"] / seconds if seconds > 0 else 0.0
        kafka_cpu = (
            100.0 * (kafka1 - kafka0) / (t_last - t_first)
            if kafka0 is not None and kafka1 is not None and t_last > t_first
            else None
        )
        say(
            f"bare agent: {data['events']} events in {seconds:.2f} s = {rate:,.0f} events/s "
            f"(CPU: agent {agent_cpu:.0f}%, kafka {_fmt(kafka_cpu)}%)"
        )
        return {
            "events": data["events"],
            "seconds": round(seconds, 3),
            "events_per_s": round(rate, 1),
            "cpu_percent": {
                "agent": round(agent_cpu, 1),
                "kafka": None if kafka_cpu is None else round(kafka_cpu, 1),
            },
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if not keep:
            for f in admin.delete_topics([source, sink, changelog]).values():
                try:
                    f.result()
                except Exception as exc:  # the figures are more important than the clean-up
                    log.warning("deleting a bare-agent topic: %s", exc)


# --- the pure layer alone ----------------------------------------------------------------------------


def _replay(inputs: list[tuple[str, int, int, int, bytes]], world: Any, session_codec: Any) -> tuple:
    """One replay of ``inputs``: (seconds spent per part, sessions, outputs, session writes, inputs
    that changed nothing by type)."""
    from processors.apply import InputRecord, apply_input
    from processors.codecs import decode
    from schemas.callback import CallbackInitiation

    def never(_topic: str, _partition: int, _offset: int) -> bool:
        return False

    sessions: dict[str, Any] = {}
    spent = {"decode": 0.0, "step": 0.0, "outputs": 0.0, "session": 0.0}
    outputs = stores = 0
    noop: Counter[str] = Counter()
    clock = time.perf_counter
    for topic, partition, offset, ts, value in inputs:
        t0 = clock()
        record = decode(topic, value)
        t1 = clock()
        cb = record.callback_id
        now = datetime.fromtimestamp(ts / 1000, UTC)
        if isinstance(record, CallbackInitiation):
            now = max(now, record.received_at)  # the worker judges an initiation by its clock
        applied = apply_input(
            sessions.get(cb),
            InputRecord(topic, partition, offset, record.event_id, record),
            world,
            now,
            never,
        )
        t2 = clock()
        for entry in applied.send:
            entry.key.encode()
            entry.value.encode()
        outputs += len(applied.send)
        t3 = clock()
        if applied.delete:
            sessions.pop(cb, None)
        elif applied.store is not None:
            sessions[cb] = applied.store
            session_codec.dumps(applied.store)
            stores += 1
        t4 = clock()
        if not applied.send and applied.store is None and not applied.delete:
            noop[record.type] += 1
        spent["decode"] += t1 - t0
        spent["step"] += t2 - t1
        spent["outputs"] += t3 - t2
        spent["session"] += t4 - t3
    return spent, sessions, outputs, stores, noop


def pure_layer(
    records: list[tuple[str, int, int, int, bytes]], config: Any, rounds: int = 5
) -> dict[str, Any]:
    """Replay captured input records through what the sessions agent does per input, in this
    process, without Kafka or Faust: decode, ``apply_input`` (the state machine), encode the
    outputs, encode the session as the changelog codec does. Best of ``rounds`` replays, so the
    figure is the code's cost, not the machine's noise. Offsets are never "committed" here, as
    within one callback in the worker (it commits every second): the outbox stays in the session."""
    from faust.serializers import codecs

    from callback.reference import ReferenceData
    from processors.codecs import codec_name, register_codecs
    from processors.session import World
    from schemas.topics import SESSIONS_CHANGELOG

    register_codecs()
    world = World(ReferenceData.from_carrier_config(config), source="bench")
    session_codec = codecs.get_codec(codec_name(SESSIONS_CHANGELOG.name))
    import orjson

    order: dict[str, int] = {}
    keyed = []
    for record in records:
        cb = orjson.loads(record[4]).get("callback_id")
        if cb is not None:
            order.setdefault(cb, len(order))
            keyed.append((order[cb], record[3], record))
    keyed.sort(key=lambda x: (x[0], x[1]))
    inputs = [r for _, _, r in keyed]

    best: dict[str, float] | None = None
    outcomes: Counter[str] = Counter()
    logging.disable(logging.INFO)  # the state machine logs each outcome: not in the bench's output
    try:
        replays = [_replay(inputs, world, session_codec) for _ in range(rounds)]
    finally:
        logging.disable(logging.NOTSET)
    outputs = stores = 0
    noop: Counter[str] = Counter()
    for spent, sessions, outputs, stores, noop in replays:  # noqa: B007 - the counts are the same each time
        if best is None or sum(spent.values()) < sum(best.values()):
            best = spent
            outcomes = Counter(str(s.state.value) for s in sessions.values())
    n = len(inputs)
    assert best is not None
    per_input = {k: round(1e6 * v / n, 1) for k, v in best.items()} if n else {}
    callbacks = len(order)
    return {
        "callbacks": callbacks,
        "inputs": n,
        "outputs": outputs,
        "session_writes": stores,
        #: inputs that changed nothing and sent nothing (the agent decodes and drops them), by type
        "noop_inputs_per_callback": {k: round(v / len(order), 2) for k, v in sorted(noop.items())}
        if order
        else {},
        "outcomes": dict(outcomes),
        "us_per_input": round(1e6 * sum(best.values()) / n, 1) if n else None,
        "us_per_input_by_part": per_input,
        "ms_per_callback": round(1e3 * sum(best.values()) / callbacks, 2) if callbacks else None,
    }


# --- the whole run ---------------------------------------------------------------------------------------


def _require_kafka() -> None:
    from callback.kafka_io import KafkaUnreachable, check_reachable

    try:
        check_reachable(timeout_s=5.0)  # the settings' cluster, with its security settings
    except KafkaUnreachable as exc:
        raise BenchError(
            f"Kafka at {exc.bootstrap} does not answer ({exc.detail}): start the local stack first "
            "(`callback stack up`)"
        ) from None


def run_bench(opts: BenchOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every phase; returns the figures (the JSON object), with ``checks`` saying what held."""
    _require_kafka()
    method = METHOD
    if opts.worker_env:
        method += "; worker environment: " + " ".join(f"{k}={v}" for k, v in sorted(opts.worker_env.items()))
    if opts.profile is not None:
        method += "; worker under cProfile during the ramp"
    result: dict[str, Any] = {"machine": machine(), "load_before": load_average(), "method": method}
    say(f"machine: {result['machine']}; load average {result['load_before']}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-processors-"))
    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, ok: bool, detail: str) -> None:
        checks[name] = {"ok": bool(ok), "detail": detail}
        if not ok:
            say(f"CHECK FAILED: {name}: {detail}")

    try:
        bare = None
        if not opts.skip_bare:
            bare = bare_agent(opts.bare_events, tmp, opts.keep, say)
            check(
                "bare agent handled every event",
                bare["events"] == opts.bare_events,
                f"{bare['events']} of {opts.bare_events}",
            )
        result["bare_agent"] = bare
        result["bare_agent_events_per_s"] = bare["events_per_s"] if bare else None

        say("starting the rig (simulator, producer, originator, processors worker) ...")
        t0 = time.monotonic()
        col = Collector()
        rig = None
        try:
            rig = Rig(tmp, opts)
            say(
                f"rig ready in {time.monotonic() - t0:.1f} s (run {rig.tag}, PBX {rig.server}, "
                f"DID {rig.did}, {len(rig.anis)} caller IDs)"
            )
            steps = ramp(rig, col, opts, say)
            result["steps"] = [s.summary() for s in steps]
            _ramp_figures(result, steps)
            for s in steps:
                check(
                    f"every callback offered at {s.rate:g}/s reached an outcome",
                    s.reached == s.offered,
                    f"{s.reached} of {s.offered} (outcomes {s.outcomes})",
                )

            if rig.captured:
                pl = result["pure_layer"] = _pure_layer_figures(rig, steps, result, say)
                check(
                    "the pure-layer replay reached the pipeline's outcomes",
                    pl["outcomes"] == {"completed": pl["callbacks"]},
                    f"{pl['callbacks']} callbacks replayed, outcomes {pl['outcomes']}",
                )

            if opts.profile is not None:
                say(f"stopping the profiled worker (profile: {opts.profile}) and restarting it unprofiled")
                rig.worker.stop(120)
                _print_profile(opts.profile, say)
                rig.worker = rig.start_worker()
                rig.wait_worker_ready(rig.worker, timeout=300)

            if not opts.ramp_only:
                _retries_and_recovery(rig, col, opts, result, check, say)
            result["run"] = {"tag": rig.tag, "server": rig.server, "logs": str(tmp)}
        finally:
            if rig is not None:
                rig.close()
            col.close()
    finally:
        result["load_after"] = load_average()
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            say(f"logs kept in {tmp}")
    result["checks"] = checks
    result["checks_ok"] = all(c["ok"] for c in checks.values())
    _goals(result)
    return result


def _retries_and_recovery(
    rig: Rig,
    col: Collector,
    opts: BenchOptions,
    result: dict[str, Any],
    check: Callable[[str, bool, str], None],
    say: Callable[[str], None],
) -> None:
    """Phases 3 and 4: retry lateness (the bench as the PBX) and recovery after SIGKILL."""
    # 4: recovery with the table the ramp left (and again after the retries, below)
    throughput = result.get("callbacks_per_s_throughput") or 0
    rec_rate = min(opts.recovery_rate, max(2.0, throughput / 2))
    recoveries: list[Recovery] = []

    def run_recovery(when: str) -> Recovery:
        say(
            f"recovery ({when}): {rec_rate:g} callbacks/s for {opts.recovery_load_s:g} s, SIGKILL "
            f"after {opts.kill_after_s:g} s"
        )
        rec = recovery(rig, col, opts, rec_rate, say)
        rec.when = when
        check(
            f"every callback across the SIGKILL ({when}) reached an outcome, originated once",
            not rec.problems,
            "; ".join(rec.problems) or f"{rec.callbacks} callbacks, outcomes {rec.outcomes}",
        )
        return rec

    if opts.recover_twice:
        recoveries.append(run_recovery("after the ramp"))

    # 3: retries, with the bench as the PBX: the originator must not act on these commands
    rig.originator.stop()
    rig.originator = None
    rounds = []
    for n in opts.retry_sizes:
        # busy results at retry_pace a second, Retry Time longer than they take: all n pending at
        # once, then coming due at that pace (a carrier's steady retries, not one instant)
        spread_s = n / opts.retry_pace
        retry_s = int(min(3600, math.ceil(spread_s + 10)))
        say(f"retry lateness: {n} pending retries (busy results at {opts.retry_pace:g}/s over "
            f"{spread_s:.0f} s, Retry Time {retry_s} s)")
        r = retry_round(rig, col, n, retry_s, say, pace=opts.retry_pace)
        lat50, lat99 = percentile(r.lateness_ms, 50), percentile(r.lateness_ms, 99)
        say(
            f"  {n} pending: lateness p50 {_fmt(lat50)} ms, p99 {_fmt(lat99)} ms, max "
            f"{_fmt(percentile(r.lateness_ms, 100))} ms; {r.fired} fired once, "
            f"{r.originate_records} attempt-2 Originate records "
            f"({r.originate_records - r.distinct} copies), {r.ticks} ticks, outcomes {r.outcomes}"
        )
        check(
            f"each of {n} pending retries fired exactly once",
            not r.problems,
            "; ".join(r.problems) or f"{r.fired} fired, {r.originate_records} records",
        )
        rounds.append(r)
    result["retries"] = [r.summary() for r in rounds]
    for r, label in zip(rounds, ("1k", "10k"), strict=False):
        result[f"retry_lateness_p50_ms_{label}"] = percentile(r.lateness_ms, 50)
        result[f"retry_lateness_p99_ms_{label}"] = percentile(r.lateness_ms, 99)
    result["retry_pending_sizes"] = list(opts.retry_sizes)

    # 4: recovery, a second time with the bigger table the retries left
    rig.originator = rig.start_originator()
    rig.originator.wait_for_log("assigned pbx.commands partitions", timeout=90)
    recoveries.append(run_recovery("after the retries"))
    result["recoveries"] = [r.summary() for r in recoveries]
    measured = [r.first_output_s for r in recoveries if r.first_output_s is not None]
    ready = [r.ready_s for r in recoveries if r.ready_s is not None]
    result["recovery_s"] = round(max(measured), 2) if len(measured) == len(recoveries) else None
    result["recovery_ready_s"] = round(max(ready), 2) if len(ready) == len(recoveries) else None


def _pure_layer_figures(
    rig: Rig, steps: list[Step], result: dict[str, Any], say: Callable[[str], None]
) -> dict:
    pl = pure_layer(rig.captured, rig.config)
    held = [s for s in steps if s.held]
    ref = held[-1] if held else steps[0]
    inputs_per_s = ref.offered_per_s * ref.events_per_callback
    cpu = ref.cpu.get("processors")
    worker_us = 1e6 * cpu / 100.0 / inputs_per_s if cpu and inputs_per_s else None
    pl["worker_cpu_us_per_input"] = None if worker_us is None else round(worker_us, 1)
    pl["worker_cpu_at_rate"] = ref.rate
    bare = result.get("bare_agent")
    if bare and bare.get("cpu_percent", {}).get("agent"):
        pl["bare_agent_cpu_us_per_event"] = round(
            1e6 * bare["cpu_percent"]["agent"] / 100.0 / bare["events_per_s"], 1
        )
    parts = ", ".join(f"{k} {v:g}" for k, v in pl["us_per_input_by_part"].items())
    noops = sum(pl["noop_inputs_per_callback"].values())
    say(
        f"pure layer (replay of {pl['inputs']} inputs of {pl['callbacks']} callbacks, in this process; "
        f"{noops:g} inputs per callback change nothing: {pl['noop_inputs_per_callback']}): "
        f"{pl['us_per_input']} us per input ({parts}), {pl['ms_per_callback']} ms per callback; "
        f"the worker's CPU per input at {ref.rate:g}/s: {_fmt(worker_us)} us; outcomes {pl['outcomes']}"
    )
    return pl


def _ramp_figures(result: dict[str, Any], steps: list[Step]) -> None:
    held = [s for s in steps if s.held]
    best = held[-1] if held else None
    result["callbacks_per_s"] = best.rate if best else 0
    result["callbacks_per_s_measured"] = round(best.completions_per_s, 2) if best else 0.0
    kept = [s for s in steps if s.kept_up]
    result["callbacks_per_s_throughput"] = kept[-1].rate if kept else 0
    at = next((s for s in held if s.rate == GOAL_RATE), None)
    if at is not None:
        result["latency_note"] = f"at {GOAL_RATE:g} callbacks/s"
    elif best is not None:
        at = best
        result["latency_note"] = (
            f"at {best.rate:g}/s, the highest sustained rate ({GOAL_RATE:g}/s was not sustained)"
        )
    else:
        at = steps[0] if steps else None
        result["latency_note"] = "no rate held: at the first rate of the ramp"
    result["latency_rate"] = at.rate if at else None
    for key, what in (("initiation_to_originate", "orig"), ("ivr_to_command", "ivr")):
        result[f"{key}_p50_ms"] = at.p(what, 50) if at else None
        result[f"{key}_p99_ms"] = at.p(what, 99) if at else None
    ref = best or (steps[0] if steps else None)
    result["events_per_callback"] = round(ref.events_per_callback, 2) if ref else None
    result["inputs_per_callback"] = ref.summary()["inputs_per_callback"] if ref else {}


def _goals(result: dict[str, Any]) -> None:
    bare, epc = result.get("bare_agent_events_per_s"), result.get("events_per_callback")
    target = GOAL_RATIO * bare / epc if bare and epc else None
    result["target_callbacks_per_s"] = None if target is None else round(target, 1)
    cps = result.get("callbacks_per_s") or 0
    p99 = result.get("initiation_to_originate_p99_ms")
    rounds = result.get("retries") or []
    r99 = rounds[-1]["lateness_p99_ms"] if rounds else None
    rec = result.get("recovery_s")
    at_goal_rate = result.get("latency_rate") == GOAL_RATE
    largest = max(result.get("retry_pending_sizes") or [0])
    result["goals"] = {
        "callbacks_per_s": {
            "goal": f">= {GOAL_RATIO} x bare / events per callback"
            + ("" if target is None else f" = {target:.1f}/s"),
            "measured": cps,
            "met": None if target is None else cps >= target,
        },
        "initiation_to_originate_p99_ms": {
            "goal": f"< {GOAL_P99_MS:.0f} ms at {GOAL_RATE:g} callbacks/s",
            "measured": p99,
            "met": bool(at_goal_rate and p99 is not None and p99 < GOAL_P99_MS),
            "note": result.get("latency_note", ""),
        },
        "retry_lateness_p99_ms_10k": {
            "goal": f"< {GOAL_RETRY_P99_MS:.0f} ms with {largest:,} pending",
            "measured": r99,
            "met": None if r99 is None else r99 < GOAL_RETRY_P99_MS,
        },
        "recovery_s": {
            "goal": f"< {GOAL_RECOVERY_S:.0f} s",
            "measured": rec,
            "met": None if rec is None else rec < GOAL_RECOVERY_S,
        },
    }


def _print_profile(path: Path, say: Callable[[str], None], top: int = 30) -> None:
    import io
    import pstats

    if not path.exists():
        say(f"no profile written to {path}")
        return
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    say(out.getvalue())


# --- output ------------------------------------------------------------------------------------------------


def render(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    p = console.print
    p(f"machine: {result['machine']}", soft_wrap=True)
    p(
        f"load average (1, 5, 15 min): before {result['load_before']}, after {result.get('load_after')}",
        soft_wrap=True,
    )
    p(f"method: {result['method']}", soft_wrap=True)
    steps = Table(title="ramp: callbacks offered per second (processors worker on the real stack)")
    for name in (
        "rate/s",
        "offered/s",
        "done",
        "init->orig p50 / p99",
        "ivr->cmd p50 / p99",
        "completed/s",
        "events/cb",
        f"CPU % worker/prod/orig/sim/kafka (host, of {100 * (os.cpu_count() or 1)})",
        "held",
    ):
        steps.add_column(name, justify="right")
    notes = []
    for s in result.get("steps", []):
        cpu = s["cpu_percent"]
        verdict = "yes" if s["held"] else ("latency" if s["kept_up"] else "NO")
        if not s["held"]:
            notes.append(f"{s['rate']:g}/s: {s['why']}")
        steps.add_row(
            f"{s['rate']:g}",
            f"{s['offered_per_s']:.1f}",
            f"{s['completed']}/{s['offered']}",
            f"{_fmt(s['initiation_to_originate_p50_ms'])} / {_fmt(s['initiation_to_originate_p99_ms'])} ms",
            f"{_fmt(s['ivr_to_command_p50_ms'])} / {_fmt(s['ivr_to_command_p99_ms'])} ms",
            f"{s['completions_per_s']:.1f}",
            f"{s['events_per_callback']:.2f}",
            "/".join(_fmt(cpu.get(k)) for k in ("processors", "producer", "originator", "simulator", "kafka"))
            + f" ({_fmt(cpu.get('machine'))})",
            verdict,
        )
    p(steps)
    for note in notes:
        p(f"  not held at {note}", soft_wrap=True)
    if result.get("inputs_per_callback"):
        inputs = ", ".join(f"{k} {v:g}" for k, v in result["inputs_per_callback"].items())
        p(f"inputs of the sessions agent per callback: {inputs}", soft_wrap=True)
    retries = Table(title="retry lateness: attempt-2 Originate CreateTime - due_at")
    for name in (
        "pending",
        "Retry Time",
        "p50",
        "p99",
        "max",
        "fired once",
        "Originate records (copies)",
        "ticks",
        "all pending before due",
    ):
        retries.add_column(name, justify="right")
    for r in result.get("retries", []):
        retries.add_row(
            f"{r['pending']:,}",
            f"{r['retry_time_s']} s",
            _fmt(r["lateness_p50_ms"], " ms"),
            _fmt(r["lateness_p99_ms"], " ms"),
            _fmt(r["lateness_max_ms"], " ms"),
            str(r["retries_fired"]),
            f"{r['attempt2_originate_records']:,} ({r['attempt2_originate_copies']:,})",
            f"{r['ticks']:,}",
            f"{'yes' if r['all_pending_before_due'] else 'NO'} (margin {r['pending_margin_s']:.1f} s)",
        )
    p(retries)
    if any(r["attempt2_originate_copies"] for r in result.get("retries", [])):
        p(
            "  copies: the same Originate (same command id) published again, which the originator drops; "
            "they come from ticks the timer sweep re-sent while the agent was still working through the "
            "burst",
            soft_wrap=True,
        )
    pl = result.get("pure_layer")
    if pl:
        parts = ", ".join(f"{k} {v:g}" for k, v in pl["us_per_input_by_part"].items())
        p(
            f"pure layer alone (decode, state machine, encode outputs and session; {pl['inputs']} recorded "
            f"inputs of {pl['callbacks']} callbacks replayed in the bench process): "
            f"{pl['us_per_input']:g} us per input ({parts}); the worker used "
            f"{_fmt(pl['worker_cpu_us_per_input'])} us of CPU per input at {pl['worker_cpu_at_rate']:g}/s; "
            "the bare agent "
            f"{_fmt(pl.get('bare_agent_cpu_us_per_event'))} us per event",
            soft_wrap=True,
        )
        noops = ", ".join(f"{k} {v:g}" for k, v in pl.get("noop_inputs_per_callback", {}).items())
        p(
            f"  inputs per callback that change nothing (decoded, then dropped): {noops or 'none'}",
            soft_wrap=True,
        )
    for rec in result.get("recoveries", []):
        p(
            f"recovery after SIGKILL, {rec['when']} ({rec['in_flight_at_kill']} callbacks in flight, "
            f"{rec['sessions_changelog_records']:,} sessions-changelog records, "
            f"{rec['sessions_in_table_after_restart']} sessions in the table): first output "
            f"{_fmt_s(rec['kill_to_first_output_s'])} after the kill, 'processors ready' "
            f"{_fmt_s(rec['kill_to_ready_log_s'])}; {rec['callbacks']} callbacks, outcomes {rec['outcomes']}",
            soft_wrap=True,
        )
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in rec["worker_log_phases_s"].items())
        p(
            f"  since the kill: {phases}; changelog replayed at "
            f"{_fmt(rec['changelog_replay_records_per_s'])} records/s",
            soft_wrap=True,
        )
    bare = result.get("bare_agent")
    if bare:
        cpu = bare.get("cpu_percent", {})
        p(
            f"bare Faust agent: {bare['events_per_s']:,.0f} events/s ({bare['events']:,} events in "
            f"{bare['seconds']:.2f} s; CPU agent {_fmt(cpu.get('agent'))}%, "
            f"kafka {_fmt(cpu.get('kafka'))}%); "
            f"events per callback {result.get('events_per_callback')}",
            soft_wrap=True,
        )
    goals = Table(title="goals (2-core machine)")
    for name in ("goal", "target", "measured", ""):
        goals.add_column(name)
    names = {
        "callbacks_per_s": "sustained callbacks/s",
        "initiation_to_originate_p99_ms": "p99 initiation -> originate",
        "retry_lateness_p99_ms_10k": "retry lateness p99",
        "recovery_s": "recovery after SIGKILL",
    }
    units = {
        "callbacks_per_s": "/s",
        "initiation_to_originate_p99_ms": " ms",
        "retry_lateness_p99_ms_10k": " ms",
        "recovery_s": " s",
    }
    for key, g in result["goals"].items():
        measured = g["measured"]
        text = (
            "-"
            if measured is None
            else f"{measured:,.1f}{units[key]}"
            if isinstance(measured, float)
            else f"{measured:,}{units[key]}"
        )
        if g.get("note"):
            text += f" ({g['note']})"
        verdict = "not measured" if g["met"] is None else ("met" if g["met"] else "MISSED")
        goals.add_row(names[key], g["goal"], text, verdict)
    p(goals)
    failed = [f"{name}: {c['detail']}" for name, c in result["checks"].items() if not c["ok"]]
    p(
        f"count checks: {len(result['checks'])} "
        + ("passed" if not failed else "run, FAILED: " + "; ".join(failed)),
        soft_wrap=True,
    )


def main(opts: BenchOptions, as_json: bool = False) -> int:
    from rich.console import Console

    out = Console(width=None if sys.stdout.isatty() else 160)
    progress = Console(stderr=True) if as_json else out

    def say(text: str) -> None:
        progress.print(text, markup=False, highlight=False, soft_wrap=True)

    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the clean-up of every phase

    import signal

    signal.signal(signal.SIGTERM, stop)
    try:
        result = run_bench(opts, say)
    except BenchError as exc:
        progress.print(f"[red]bench failed:[/red] {exc}")
        return 2
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        render(result, out)
    return 0 if result["checks_ok"] else 1
