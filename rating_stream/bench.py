"""``callback bench rating``: legs/s rated and stored, against a raw pass-through on the same stack.

Method (printed with the figures):

1. The benchmark creates its own topics (``bench.<run>.*``: legs, CDRs, balances and copies of the
   config topics) and its own ClickHouse tables (``callback.bench_<run>_*``: a copy of ``cdr`` with
   the analysts' materialized views, and a raw table for the pass-through), and deletes them all
   afterwards, so it never touches the pipeline's real data.
2. It produces ``--legs`` synthetic finished legs (``loadgen``: realistic callbacks, 30 payers,
   7 destinations) to the legs topic before anything is timed.
3. Pass-through: one process consumes those legs (read_committed, batches) and inserts the same
   rows unrated into the raw table (columnar, commit after insert), i.e. a sink with no rating.
4. Rated and stored: the real rater (transactions, balances, CDRs) and the real sink run as two
   processes, concurrently, from the same legs topic to the CDR table.
5. Each rate is legs / (last leg stored - first leg consumed), both clocks taken in the processes,
   so start-up (group join, reading state) is excluded from both alike.
6. ``--rounds`` repeats 1-5 on fresh topics and tables; the figures reported are the medians of
   each rate and the ratio of the medians. A single round of a few seconds on two shared cores
   swings by a third from run to run, mostly on the pass-through side.
7. Rating alone: the rater's own work (decode, price, charge, encode) over the same kind of legs,
   in the bench's process, without Kafka (``rating_alone``); the rater's CPU per leg beyond it is
   Kafka's share (consume, produce, transactions).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from confluent_kafka.admin import AdminClient, NewTopic

from callback.clickhouse_io import clickhouse_client
from callback.kafka_io import BROKER_DEFAULT_RF, base_config
from callback.reference import ReferenceData
from callback.reference_feed import RATING_TOPICS
from callback.stage_loop import spaced_collection
from rating_stream.batch import LEG_CLOCK_SKEW_S, RatingBatch, RecentLegs
from rating_stream.cdr import LEG_COLUMNS, cdr_row, epoch
from rating_stream.loadgen import leg_records, make_legs, produce, publish_reference, reference_records
from rating_stream.payer import Ledger
from rating_stream.rater import Rater, RaterOptions
from rating_stream.sink import CdrSink, SinkOptions
from rating_stream.wire import LegWire

#: the pass-through table: the finished leg's columns of ``cdr``, with their types, in a plain MergeTree
RAW_COLUMNS = LEG_COLUMNS
RAW_DDL = (
    "CREATE TABLE {table} ENGINE = MergeTree PARTITION BY toYYYYMM(start_time) ORDER BY leg_id "
    f"AS SELECT {', '.join(RAW_COLUMNS)} FROM callback.cdr WHERE 0"
)
VIEW_TABLES = (
    "revenue_by_payer_daily",
    "revenue_by_prefix_daily",
    "revenue_by_did_daily",
    "callback_outcomes_daily",
    "cdr_versions",
)


def leg_row(value: bytes) -> tuple:
    """A finished leg's record as a ``RAW_COLUMNS`` row: the same reading a sink does (msgspec, types
    checked, times parsed natively), no rating.

    Positional like ``cdr_row``, for the same speed; a unit test holds it to ``cdr_row``'s values."""
    d = _read_leg(value)
    start, start_ms = epoch(d.started_at)
    end, end_ms = epoch(d.ended_at)
    answer, answer_ms = epoch(d.answered_at) if d.answered_at is not None else (None, 0)
    payer = d.payer
    return (
        d.leg_id,
        d.callback_id,
        d.attempt,
        d.leg.value,  # the driver's Enum8 column takes the text, not a Python enum
        d.src or "",
        d.dst,
        d.did or "",
        d.pbx_id or "",
        start,
        start_ms,
        answer,
        answer_ms,
        end,
        end_ms,
        d.disposition.value,
        d.q850_cause,
        d.sip_code,
        payer.kind.value,
        payer.id,
        d.auth_method.value if d.auth_method is not None else "",
        d.final_state.value if d.final_state is not None else "",
    )


_read_leg = msgspec.json.Decoder(LegWire).decode


@dataclass
class Names:
    run: str

    def topic(self, what: str) -> str:
        return f"bench.{self.run}.{what}"

    def table(self, what: str) -> str:
        return f"callback.bench_{self.run}_{what}"

    @property
    def config_topics(self) -> dict[str, str]:
        return {t: self.topic(t) for t in RATING_TOPICS}


# --- child processes (spawned: librdkafka state must not be forked) -------------------------------


@dataclass
class Clocks:
    """Shared with a child process: wall time of its first record, the count done, and the process
    CPU time (every thread: librdkafka's too) at its first record and at its last batch."""

    first: Any
    done: Any
    cpu_first: Any
    cpu_last: Any

    @classmethod
    def make(cls, ctx: Any) -> Clocks:
        return cls(
            ctx.RawValue("d", 0.0), ctx.RawValue("q", 0), ctx.RawValue("d", 0.0), ctx.RawValue("d", 0.0)
        )

    def started(self) -> None:
        if self.first.value == 0:
            self.first.value = time.time()
            self.cpu_first.value = time.process_time()

    def progressed(self, total: int) -> None:
        self.cpu_last.value = time.process_time()
        self.done.value = total

    @property
    def cpu_s(self) -> float:
        return self.cpu_last.value - self.cpu_first.value

    def start_at_first_record(self, stage: Any) -> None:
        """Start the clocks when ``stage`` takes its first record; the records after it go
        straight to the stage (a check per record would be counted as the stage's CPU)."""
        take = stage.take

        def timed_take(msg: Any) -> None:
            self.started()
            stage.take = take
            take(msg)

        stage.take = timed_take


def _rater_child(
    opts: RaterOptions, clocks: Clocks, together: Any = None, committed_keys: Any = None
) -> None:
    """A rater; with ``together`` (a barrier) it joins its group only when every member of the run
    has started, so the members share the legs from the first rebalance on; with
    ``committed_keys`` (a queue) it reports (time committed, CDR keys) of every transaction, for
    the latency run."""
    rater = Rater(opts)
    settled, start = rater.settled, rater.start

    def start_together() -> None:
        start()
        together.wait(120)

    def counted(rated: Any, committed: bool) -> None:
        settled(rated, committed)
        if committed:
            clocks.progressed(clocks.done.value + len(rated.msgs))
            if committed_keys is not None:
                committed_keys.put((time.time(), [key for key, _value in rated.result.cdrs]))

    clocks.start_at_first_record(rater)
    rater.settled = counted  # type: ignore[method-assign]
    if together is not None:
        rater.start = start_together  # type: ignore[method-assign]
    rater.run()


def _sink_child(opts: SinkOptions, raw: bool, clocks: Clocks, stored_keys: Any = None) -> None:
    """A sink (the real one, or the pass-through's when ``raw``); with ``stored_keys`` (a queue) it
    reports (time stored, keys) of every batch, for the latency run."""
    sink = CdrSink(opts, row=leg_row if raw else cdr_row, on_stored=clocks.progressed)
    settled = sink.settled

    def reported(stored: Any, committed: bool) -> None:
        settled(stored, committed)
        stored_keys.put((time.time(), [m.key() for m in stored.msgs]))

    clocks.start_at_first_record(sink)
    if stored_keys is not None:
        sink.settled = reported  # type: ignore[method-assign]
    sink.run()


@dataclass
class Timing:
    legs: int
    seconds: float
    cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.legs / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_leg(self) -> float:
        return self.cpu_s / self.legs * 1e6 if self.legs else 0.0


class CountMismatch(RuntimeError):
    """The benchmark did not store what it produced: its figures would be about something else."""


def _wait(clocks: list[Clocks], legs: int, procs: list[mp.process.BaseProcess], timeout_s: float) -> float:
    """Until ``clocks`` (the children of one stage) have done ``legs`` between them."""
    deadline = time.monotonic() + timeout_s
    while (done := sum(c.done.value for c in clocks)) < legs:
        for p in procs:
            if not p.is_alive():
                raise RuntimeError(f"{p.name} exited with {p.exitcode} before storing {legs} legs")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {legs} legs stored in {timeout_s:.0f} s")
        time.sleep(0.02)
    return time.time()


def _stop(procs: list[mp.process.BaseProcess]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: both finish their batch and exit
    for p in procs:
        p.join(60)


def _check_count(what: str, got: int, want: int) -> None:
    if got != want:
        raise CountMismatch(f"{what}: {got} rows stored for {want} legs produced")


@dataclass
class Round:
    passthrough: Timing
    rated: Timing
    rater_cpu_us: float
    sink_cpu_us: float

    @property
    def passthrough_cpu_us(self) -> float:
        return self.passthrough.cpu_us_per_leg

    @property
    def ratio(self) -> float:
        return self.rated.rate / self.passthrough.rate if self.passthrough.rate else 0.0


@dataclass
class Summary:
    """Medians of the rounds, and the goals of docs/rating.md ("Speed")."""

    rounds: list[Round]
    legs: int
    load_before: list[float]
    load_after: list[float]
    raters: int = 1
    #: CPU per leg of rating alone (``rating_alone``)
    alone_cpu_us: float = 0.0

    @property
    def rated(self) -> float:
        return statistics.median(r.rated.rate for r in self.rounds)

    @property
    def passthrough(self) -> float:
        return statistics.median(r.passthrough.rate for r in self.rounds)

    @property
    def ratio(self) -> float:
        return self.rated / self.passthrough if self.passthrough else 0.0

    @property
    def rater_cpu_us(self) -> float:
        return statistics.median(r.rater_cpu_us for r in self.rounds)

    @property
    def sink_cpu_us(self) -> float:
        return statistics.median(r.sink_cpu_us for r in self.rounds)

    def as_dict(self) -> dict[str, Any]:
        return {
            "legs": self.legs,
            "rounds": len(self.rounds),
            "raters": self.raters,
            "rated_legs_per_s": round(self.rated),
            "passthrough_legs_per_s": round(self.passthrough),
            "ratio": round(self.ratio, 3),
            "rater_cpu_us_per_leg": round(self.rater_cpu_us, 1),
            "sink_cpu_us_per_row": round(self.sink_cpu_us, 1),
            "rating_alone_cpu_us_per_leg": round(self.alone_cpu_us, 1),
            "stored_checked": True,
            "load_before": self.load_before,
            "load_after": self.load_after,
        }

    def goals(self) -> list[tuple[str, str, float, bool]]:
        return [
            ("rater CPU per leg, us", "<= 15", self.rater_cpu_us, self.rater_cpu_us <= GOAL_CPU_US),
            ("rated and stored, legs/s", ">= 40,000", self.rated, self.rated >= GOAL_LEGS_PER_S),
            ("rated / pass-through", ">= 0.70", self.ratio, self.ratio >= GOAL_RATIO),
        ]


GOAL_CPU_US = 15.0
GOAL_LEGS_PER_S = 40_000
GOAL_RATIO = 0.7
GOAL_P99_MS = 250.0


def run_rounds(
    rounds: int = 3,
    legs: int = 200_000,
    batch_max: int = 20_000,
    keep: bool = False,
    echo: Any = print,
    raters: int = 1,
) -> Summary:
    """``rounds`` independent benchmark rounds; their medians, checked counts and the goals."""
    from infra.bench import load_average

    load_before = load_average()
    echo(_machine())
    results: list[Round] = []
    for i in range(rounds):
        echo(f"--- round {i + 1} of {rounds}")
        results.append(run_bench(legs=legs, batch_max=batch_max, keep=keep, echo=echo, raters=raters))
    summary = Summary(results, legs, load_before, load_average(), raters, rating_alone(legs, batch_max))
    echo(
        f"=== median of {rounds} rounds of {legs} legs, {raters} rater(s) in one group; every round "
        f"stored exactly {legs} CDRs (FINAL) "
        f"and {legs} pass-through rows; load average before {summary.load_before}, after {summary.load_after}"
    )
    echo(
        f"pass-through:      {summary.passthrough:,.0f} legs/s  (rounds: "
        f"{', '.join(f'{r.passthrough.rate:,.0f}' for r in results)})"
    )
    echo(
        f"rated and stored:  {summary.rated:,.0f} legs/s  (rounds: "
        f"{', '.join(f'{r.rated.rate:,.0f}' for r in results)})"
    )
    echo(f"ratio rated/pass-through: {summary.ratio:.2f}")
    echo(
        f"CPU per leg (process time, all threads): rater {summary.rater_cpu_us:.1f} us, sink "
        f"{summary.sink_cpu_us:.1f} us, pass-through "
        f"{statistics.median(r.passthrough_cpu_us for r in results):.1f} us"
    )
    echo(
        f"rating alone (decode, price, charge, encode; {legs} legs in one process, no Kafka): "
        f"{summary.alone_cpu_us:.1f} us per leg, so Kafka's share of the rater's CPU is "
        f"{summary.rater_cpu_us - summary.alone_cpu_us:.1f} us"
    )
    for name, goal, value, met in summary.goals():
        echo(f"goal {name}: {goal}: {value:,.2f} {'met' if met else 'NOT met'}")
    return summary


def rating_alone(legs: int, batch_max: int) -> float:
    """Process CPU per leg of the rater's own work: ``legs`` legs of the bench's kind rated in
    batches of ``batch_max`` (decoded, priced, charged, encoded, each batch committed to the ledger),
    in this process, without Kafka, with the collector set as the stage loop sets it. Every leg
    must yield a CDR, or ``CountMismatch``."""
    run = f"alone{uuid.uuid4().hex[:6]}"
    ref = ReferenceData()
    for topic, key, value in reference_records(run):
        ref.apply(topic, key.decode(), value)
    values = [value for _key, value in leg_records(make_legs(run, legs))]
    ledger = Ledger()
    recent = RecentLegs(RaterOptions().dedupe_window_s, clock_skew_s=LEG_CLOCK_SKEW_S)
    rated = 0
    with spaced_collection():
        t0 = time.process_time()
        for start in range(0, legs, batch_max):
            batch = RatingBatch(ref, ledger, recent, source="rating/bench", rated_at=datetime.now(UTC))
            for i, value in enumerate(values[start : start + batch_max]):
                batch.add(i, value)
            rated += len(batch.finish().cdrs)
            batch.commit(time.time())
        cpu_s = time.process_time() - t0
    _check_count("rating alone, CDRs", rated, legs)
    return cpu_s / legs * 1e6


class _Bench:
    """One benchmark's own topics and tables (created, then deleted unless ``keep``)."""

    def __init__(self, keep: bool) -> None:
        self.names = Names(uuid.uuid4().hex[:8])
        self.keep = keep
        self.admin = AdminClient(base_config())
        names = self.names
        self.topics = [
            names.topic("legs"),
            names.topic("rerates"),
            names.topic("cdr"),
            names.topic("balances"),
            names.topic("ledger"),
            *names.config_topics.values(),
        ]
        compacted = {names.topic("balances"), *names.config_topics.values()}
        partitioned = {names.topic(t) for t in ("legs", "rerates", "cdr", "balances", "ledger")}
        futures = self.admin.create_topics(
            [
                NewTopic(
                    t,
                    6 if t in partitioned else 1,
                    BROKER_DEFAULT_RF,
                    config={"cleanup.policy": "compact"} if t in compacted else {},
                )
                for t in self.topics
            ]
        )
        for f in futures.values():
            f.result()
        self.ch = clickhouse_client()
        self.ch.execute(f"CREATE TABLE {names.table('cdr')} AS callback.cdr")
        self.ch.execute(RAW_DDL.format(table=names.table("raw")))
        _create_views(self.ch, names)
        publish_reference(names.run, topics=names.config_topics)
        self.procs: list[mp.process.BaseProcess] = []
        self.ctx = mp.get_context("spawn")

    def rater_options(self, batch_max: int, instance: str | None = None) -> RaterOptions:
        names = self.names
        return RaterOptions(
            instance=instance or names.run,
            group_id=f"bench-{names.run}-rater",
            legs_topic=names.topic("legs"),
            rerates_topic=names.topic("rerates"),
            cdr_topic=names.topic("cdr"),
            balances_topic=names.topic("balances"),
            ledger_topic=names.topic("ledger"),
            reference_topics=tuple(names.config_topics.values()),
            reference_aliases={v: k for k, v in names.config_topics.items()},
            batch_max=batch_max,
        )

    def sink_options(self) -> SinkOptions:
        names = self.names
        return SinkOptions(
            group_id=f"bench-{names.run}-sink", topic=names.topic("cdr"), table=names.table("cdr")
        )

    def start(self, target: Any, args: tuple, name: str) -> mp.process.BaseProcess:
        proc = self.ctx.Process(target=target, args=args, name=name)
        self.procs.append(proc)
        proc.start()
        return proc

    def rows(self, what: str) -> int:
        return int(self.ch.execute(f"SELECT count() FROM {self.names.table(what)}")[0][0])

    def cdrs(self) -> tuple[int, Any]:
        """(legs, revenue) in the CDR table under FINAL: each leg once."""
        table = self.names.table("cdr")
        count, revenue = self.ch.execute(f"SELECT count(), sum(price) FROM {table} FINAL")[0]
        return int(count), revenue

    def close(self) -> None:
        _stop([p for p in self.procs if p.pid is not None])
        names = self.names
        if not self.keep:
            for view in VIEW_TABLES:
                self.ch.execute(f"DROP TABLE IF EXISTS {names.table(view)}_mv")
                self.ch.execute(f"DROP TABLE IF EXISTS {names.table(view)}")
            self.ch.execute(f"DROP TABLE IF EXISTS {names.table('cdr')}")
            self.ch.execute(f"DROP TABLE IF EXISTS {names.table('raw')}")
            for f in self.admin.delete_topics(self.topics).values():
                f.result()
        self.ch.disconnect()


def run_bench(
    legs: int = 200_000, batch_max: int = 20_000, keep: bool = False, echo: Any = print, raters: int = 1
) -> Round:
    """One round: the pass-through, then the rater(s) (``raters`` members of one group) and the
    sink, from the same pre-produced legs. The rater CPU per leg is all members' CPU together."""
    bench = _Bench(keep)
    names = bench.names
    try:
        t0 = time.monotonic()
        produce(names.topic("legs"), leg_records(make_legs(names.run, legs)), timeout_s=600)
        echo(f"produced {legs} legs to {names.topic('legs')} in {time.monotonic() - t0:.1f} s (not timed)")

        clocks = Clocks.make(bench.ctx)
        raw_opts = SinkOptions(
            group_id=f"bench-{names.run}-raw",
            topic=names.topic("legs"),
            table=names.table("raw"),
            columns=RAW_COLUMNS,
            stamp_inserted_at=False,  # the pass-through table has no inserted_at
        )
        procs = [bench.start(_sink_child, (raw_opts, True, clocks), "pass-through")]
        end = _wait([clocks], legs, procs, 1800)
        _stop(procs)
        passthrough = Timing(legs, end - clocks.first.value, clocks.cpu_s)
        _check_count("pass-through table", bench.rows("raw"), legs)
        echo(
            f"pass-through (consume + insert unrated): {passthrough.rate:,.0f} legs/s "
            f"({legs} legs in {passthrough.seconds:.2f} s; {legs} rows stored)"
        )

        members = [Clocks.make(bench.ctx) for _ in range(raters)]
        sink, together = Clocks.make(bench.ctx), bench.ctx.Barrier(raters)
        procs = [
            bench.start(
                _rater_child, (bench.rater_options(batch_max, f"{names.run}-{i}"), c, together), f"rater {i}"
            )
            for i, c in enumerate(members)
        ]
        procs.append(bench.start(_sink_child, (bench.sink_options(), False, sink), "sink"))
        rater_end = _wait(members, legs, procs, 1800)
        end = _wait([sink], legs, procs, 1800)
        _stop(procs)
        first = min(c.first.value for c in members if c.first.value)
        rated = Timing(legs, end - first)
        stored, revenue = bench.cdrs()
        _check_count("CDR table (FINAL)", stored, legs)
        shares = ", ".join(f"{c.done.value}" for c in members)
        echo(f"  ({raters} rater(s) committed all legs after {rater_end - first:.2f} s; legs each: {shares})")
        echo(
            f"rated and stored ({raters} rater(s) + sink processes):  {rated.rate:,.0f} legs/s "
            f"({legs} legs in {rated.seconds:.2f} s; {stored} CDRs, revenue {revenue})"
        )
        result = Round(
            passthrough,
            rated,
            rater_cpu_us=sum(c.cpu_s for c in members) / legs * 1e6,
            sink_cpu_us=sink.cpu_s / legs * 1e6,
        )
        echo(
            f"ratio rated/pass-through: {result.ratio:.2f}; CPU per leg: rater {result.rater_cpu_us:.1f} us, "
            f"sink {result.sink_cpu_us:.1f} us"
        )
        return result
    finally:
        bench.close()


@dataclass
class Latency:
    rate: float
    legs: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: the two halves of the way: produced -> the rater's transaction committed, and committed ->
    #: stored by the sink; (p50, p99) each
    to_commit_ms: tuple[float, float] = (0.0, 0.0)
    commit_to_stored_ms: tuple[float, float] = (0.0, 0.0)

    @property
    def met(self) -> bool:
        return self.p99_ms < GOAL_P99_MS


def run_latency(
    rate: float = 500.0, seconds: float = 20.0, warmup_s: float = 3.0, echo: Any = print
) -> Latency:
    """Leg -> ClickHouse latency at a steady ``rate``: legs produced paced (every 10 ms, with the
    pipeline's producer settings and linger.ms 5), each one's produce time kept; the real rater and
    sink run as processes and the sink reports when each batch was stored (the rater when each
    transaction committed, for the split). Latency = stored - produced, per leg, for the legs after
    ``warmup_s``; every leg must be stored."""
    from confluent_kafka import Producer

    from callback.kafka_io import producer_config

    bench = _Bench(keep=False)
    names = bench.names
    try:
        stored_q, committed_q = bench.ctx.Queue(), bench.ctx.Queue()
        rater, sink = Clocks.make(bench.ctx), Clocks.make(bench.ctx)
        procs = [
            bench.start(_rater_child, (bench.rater_options(20_000), rater, None, committed_q), "rater"),
            bench.start(_sink_child, (bench.sink_options(), False, sink, stored_q), "sink"),
        ]
        total = int(rate * (warmup_s + seconds))
        made = list(make_legs(names.run, total))
        legs = list(leg_records(made))
        keys = [leg.leg_id.encode() for leg in made]  # the CDR's key: what the sink reports
        producer = Producer(producer_config(**{"linger.ms": 5}))
        produced: dict[bytes, float] = {}
        t0 = time.time()
        for i, (key, value) in enumerate(legs):
            wait = t0 + i / rate - time.time()
            if wait > 0:
                time.sleep(wait)
            producer.poll(0)
            produced[keys[i]] = time.time()
            producer.produce(names.topic("legs"), value, key)
        producer.flush(30)
        stored: dict[bytes, float] = {}
        deadline = time.monotonic() + 120
        while len(stored) < total and time.monotonic() < deadline:
            for p in procs:
                if not p.is_alive():
                    raise RuntimeError(f"{p.name} exited with {p.exitcode}")
            try:
                at, batch = stored_q.get(timeout=1)
            except Exception:  # noqa: BLE001 - queue.Empty: keep waiting
                continue
            for k in batch:
                stored.setdefault(k, at)
        _check_count("legs stored in the latency run", len(stored), total)
        committed: dict[bytes, float] = {}
        while len(committed) < total:  # every stored leg was committed before: all reported by now
            at, batch = committed_q.get(timeout=30)
            for k in batch:
                committed.setdefault(k, at)
        timed = keys[int(rate * warmup_s) :]
        measured = sorted((stored[k] - produced[k]) * 1000 for k in timed)
        result = Latency(
            rate, len(measured), *_p50_p99(measured), round(measured[-1], 1),
            _p50_p99([(committed[k] - produced[k]) * 1000 for k in timed]),
            _p50_p99([(stored[k] - committed[k]) * 1000 for k in timed]),
        )
        echo(
            f"latency leg -> ClickHouse at {rate:,.0f} legs/s over {seconds:.0f} s ({result.legs} legs "
            f"after {warmup_s:.0f} s of warm-up, every one stored): p50 {result.p50_ms} ms, "
            f"p99 {result.p99_ms} ms, max {result.max_ms} ms "
            f"(goal p99 < {GOAL_P99_MS:.0f} ms: {'met' if result.met else 'NOT met'}); "
            f"produced -> rater committed p50/p99 {result.to_commit_ms[0]}/{result.to_commit_ms[1]} ms, "
            f"committed -> stored {result.commit_to_stored_ms[0]}/{result.commit_to_stored_ms[1]} ms"
        )
        return result
    finally:
        bench.close()


def _p50_p99(ms: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return round(q[49], 1), round(q[98], 1)


def _create_views(ch: Any, names: Names) -> None:
    """The analysts' views of migration 0003, pointed at the benchmark's CDR table."""
    from infra.migrate import MIGRATIONS_DIR, split_statements

    sql = (MIGRATIONS_DIR / "0003_cdr_analytics.sql").read_text()
    for view in VIEW_TABLES:
        sql = sql.replace(f"callback.{view}_mv ", f"{names.table(view)}_mv ")
        sql = sql.replace(f"callback.{view}\n", f"{names.table(view)}\n")
    sql = sql.replace("FROM callback.cdr;", f"FROM {names.table('cdr')};")
    for statement in split_statements(sql):
        ch.execute(statement)


def _machine() -> str:
    from infra.bench import load_average, machine

    load = ", ".join(f"{x:.2f}" for x in load_average())
    return (
        f"machine: {machine()}, load average {load}\n"
        "method: legs pre-produced to bench topics; pass-through = 1 process consume+insert unrated; "
        "rated = rater + sink processes (Kafka transactions, balances, CDRs, ClickHouse with views); "
        "rate = legs / (last stored - first consumed)"
    )
