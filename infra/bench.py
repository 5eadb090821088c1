"""``callback bench``: every benchmark in one run, with the broker's own speed as the reference.

1. **Kafka round trip** (the physical reference, on the same broker, in the same run): one producer
   (the pipeline's settings: acks=all, idempotent, lz4) writes N records of 200 bytes to a fresh
   6-partition topic while one consumer reads them back; records/s = N / (last read - first
   written), both clocks in this process.
2. **Rating** (``callback bench rating``, ``rating_stream/bench.py``): rated and stored legs/s
   against a raw pass-through, medians of rounds.
3. **Processors** (``callback bench processors``, ``processors/bench.py``): sustained callbacks/s,
   latencies, retry lateness, recovery after SIGKILL, against a bare Faust agent.

The figures, the machine, the load before and after and each goal go to
``bench/results/<date>.json`` and ``bench/results/<date>.md`` (the README quotes the table);
``--json`` prints the JSON object.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callback.settings import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} CPUs ({cpu}){memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def kafka_roundtrip(messages: int = 200_000, size: int = 200, echo: Any = print) -> dict[str, Any]:
    """Records/s through the broker and back, with the pipeline's producer and consumer settings."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from callback.kafka_io import BROKER_DEFAULT_RF, base_config, consumer_config, producer_config

    topic = f"bench.{uuid.uuid4().hex[:8]}.roundtrip"
    admin = AdminClient(base_config())
    new = NewTopic(topic, num_partitions=6, replication_factor=BROKER_DEFAULT_RF)
    admin.create_topics([new])[topic].result(30)
    got = {"n": 0, "last": 0.0}
    ready = threading.Event()

    def consume() -> None:
        consumer = Consumer(
            consumer_config(f"bench-roundtrip-{topic}", read_committed=False, **{"fetch.wait.max.ms": 10})
        )
        consumer.subscribe([topic], on_assign=lambda c, parts: ready.set())
        deadline = time.monotonic() + 300
        try:
            while got["n"] < messages and time.monotonic() < deadline:
                batch = consumer.consume(num_messages=10_000, timeout=0.2)
                got["n"] += sum(1 for m in batch if m.error() is None)
                if batch:
                    got["last"] = time.time()
        finally:
            consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    ready.wait(60)
    producer = Producer(producer_config(**{"linger.ms": 5, "queue.buffering.max.messages": 1_000_000}))
    payload = os.urandom(size // 2).hex().encode()
    first = time.time()
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=payload)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    reader.join(320)
    admin.delete_topics([topic])
    if got["n"] != messages:
        raise RuntimeError(f"kafka round trip: {got['n']} of {messages} records came back")
    seconds = got["last"] - first
    rate = messages / seconds
    echo(f"kafka round trip: {messages} records of {size} bytes in {seconds:.2f} s = {rate:,.0f} records/s")
    return {"messages": messages, "bytes": size, "seconds": round(seconds, 3), "msgs_per_s": round(rate)}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_all(*, quick: bool = False, echo: Any = print) -> dict[str, Any]:
    """Every benchmark, in order; the results object (also written to bench/results/)."""
    from infra.stack import up
    from processors.bench import BenchOptions, run_bench
    from rating_stream.bench import run_rounds

    up(provision=True)
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": load_average(),
        "quick": quick,
    }
    echo(f"machine: {result['machine']}; load average before: {result['load_before']}")
    kafka = kafka_roundtrip(messages=20_000 if quick else 200_000, echo=echo)
    rating = run_rounds(rounds=1 if quick else 3, legs=20_000 if quick else 200_000, echo=echo)
    rated, passthrough = rating.rated, rating.passthrough
    processors = run_bench(BenchOptions.quick() if quick else BenchOptions(), say=echo)
    result["kafka_roundtrip"] = kafka
    result["kafka_roundtrip_msgs_per_s"] = kafka["msgs_per_s"]
    result["rating_legs_per_s"] = round(rated)
    result["rating_passthrough_legs_per_s"] = round(passthrough)
    result["rating_vs_passthrough"] = round(rated / passthrough, 3) if passthrough else None
    result["rating_cpu_us_per_leg"] = round(rating.rater_cpu_us, 1)
    result["processors"] = processors
    for key in (
        "callbacks_per_s",
        "initiation_to_originate_p50_ms",
        "initiation_to_originate_p99_ms",
        "ivr_to_command_p99_ms",
        "retry_lateness_p99_ms_1k",
        "retry_lateness_p99_ms_10k",
        "recovery_s",
        "bare_agent_events_per_s",
        "events_per_callback",
    ):
        result[key] = processors.get(key)
    result["load_after"] = load_average()
    result["goals"] = goals(result)
    return result


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal, the figure measured for it and whether it is met (None: not measured)."""

    def row(name: str, goal: str, value: Any, met: bool | None) -> dict[str, Any]:
        return {"figure": name, "goal": goal, "measured": value, "met": met}

    def at_least(value: Any, bound: float) -> bool | None:
        return None if value is None else value >= bound

    def below(value: Any, bound: float) -> bool | None:
        return None if value is None else value < bound

    from rating_stream.bench import GOAL_CPU_US, GOAL_LEGS_PER_S, GOAL_RATIO

    bare, per_cb = r.get("bare_agent_events_per_s"), r.get("events_per_callback")
    cb_goal = 0.7 * bare / per_cb if bare and per_cb else None
    return [
        row("Kafka round trip, records/s", "reference", r.get("kafka_roundtrip_msgs_per_s"), None),
        row(
            "rating: rated and stored legs/s",
            f">= {GOAL_LEGS_PER_S:,}",
            r.get("rating_legs_per_s"),
            at_least(r.get("rating_legs_per_s"), GOAL_LEGS_PER_S),
        ),
        row(
            "rating: rated / pass-through",
            f">= {GOAL_RATIO}",
            r.get("rating_vs_passthrough"),
            at_least(r.get("rating_vs_passthrough"), GOAL_RATIO),
        ),
        row(
            "rating: rater CPU per leg, us",
            f"<= {GOAL_CPU_US:.0f}",
            r.get("rating_cpu_us_per_leg"),
            below(r.get("rating_cpu_us_per_leg"), GOAL_CPU_US + 1e-9),
        ),
        row(
            "processors: sustained callbacks/s",
            f">= 0.7 x bare agent / events per callback = {cb_goal:.1f}"
            if cb_goal
            else ">= 0.7 x bare agent",
            r.get("callbacks_per_s"),
            at_least(r.get("callbacks_per_s"), cb_goal) if cb_goal else None,
        ),
        row(
            "processors: p99 initiation -> originate, ms",
            "< 100 at 100 callbacks/s",
            r.get("initiation_to_originate_p99_ms"),
            None
            if (r.get("callbacks_per_s") or 0) < 100
            else below(r.get("initiation_to_originate_p99_ms"), 100),
        ),
        row(
            "processors: retry lateness p99 with 10,000 pending, ms",
            "< 250",
            r.get("retry_lateness_p99_ms_10k"),
            below(r.get("retry_lateness_p99_ms_10k"), 250),
        ),
        row(
            "processors: recovery after SIGKILL, s",
            "< 15",
            r.get("recovery_s"),
            below(r.get("recovery_s"), 15),
        ),
    ]


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Measured {r['date']} on {r['machine']}; load average (1, 5, 15 min) before {r['load_before']}, "
        f"after {r['load_after']}. Method: the docstrings of `infra/bench.py`, `rating_stream/bench.py` "
        "and `processors/bench.py`.",
        "",
        "| figure | goal | measured | |",
        "|---|---|---|---|",
    ]
    for g in r["goals"]:
        mark = {True: "met", False: "missed", None: ""}[g["met"]]
        value = g["measured"]
        shown = (
            f"{value:,}" if isinstance(value, int) else (f"{value:,.2f}" if isinstance(value, float) else "-")
        )
        lines.append(f"| {g['figure']} | {g['goal']} | {shown} | {mark} |")
    return "\n".join(lines) + "\n"


def write(r: dict[str, Any], directory: Path = RESULTS) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = r["date"][:10] + ("-quick" if r.get("quick") else "")
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(r, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown(r), encoding="utf-8")
    return json_path, md_path
