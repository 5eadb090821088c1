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
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from callback.clickhouse_io import clickhouse_client
from callback.kafka_io import base_config
from callback.reference_feed import RATING_TOPICS
from rating_stream.cdr import LEG_COLUMNS, _epoch
from rating_stream.loadgen import leg_records, make_legs, produce, publish_reference
from rating_stream.rater import Rater, RaterOptions
from rating_stream.sink import CdrSink, SinkOptions

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


def leg_row(d: dict[str, Any]) -> tuple:
    """A finished leg's JSON object as a ``RAW_COLUMNS`` row: the same parsing a sink does, no rating.

    Positional like ``cdr_row``, for the same speed; a unit test holds it to ``cdr_row``'s values."""
    start, start_ms = _epoch(d["started_at"])
    end, end_ms = _epoch(d["ended_at"])
    answer, answer_ms = _epoch(d["answered_at"]) if d.get("answered_at") else (None, 0)
    payer = d["payer"]
    return (
        d["leg_id"],
        d["callback_id"],
        int(d["attempt"]),
        d["leg"],
        d.get("src") or "",
        d["dst"],
        d.get("did") or "",
        d.get("pbx_id") or "",
        start,
        start_ms,
        answer,
        answer_ms,
        end,
        end_ms,
        d["disposition"],
        d.get("q850_cause"),
        d.get("sip_code"),
        payer["kind"],
        payer["id"],
        d.get("auth_method") or "",
        d.get("final_state") or "",
    )


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


def _rater_child(opts: RaterOptions, first: Any, done: Any) -> None:
    rater = Rater(opts)
    take, settled = rater.take, rater.settled

    def timed_take(msg: Any) -> None:
        if first.value == 0:
            first.value = time.time()
        take(msg)

    def counted(rated: Any, committed: bool) -> None:
        settled(rated, committed)
        done.value += len(rated.msgs)

    rater.take = timed_take  # type: ignore[method-assign]
    rater.settled = counted  # type: ignore[method-assign]
    rater.run()


def _sink_child(opts: SinkOptions, raw: bool, first: Any, done: Any) -> None:
    def stored(total: int) -> None:
        done.value = total

    sink = CdrSink(opts, row=leg_row, on_stored=stored) if raw else CdrSink(opts, on_stored=stored)
    take = sink.take

    def timed_take(msg: Any) -> None:
        if first.value == 0:
            first.value = time.time()
        take(msg)

    sink.take = timed_take  # type: ignore[method-assign]
    sink.run()


@dataclass
class Timing:
    legs: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.legs / self.seconds if self.seconds > 0 else 0.0


def _wait(done: Any, legs: int, procs: list[mp.process.BaseProcess], timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while done.value < legs:
        for p in procs:
            if not p.is_alive():
                raise RuntimeError(f"{p.name} exited with {p.exitcode} before storing {legs} legs")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done.value} of {legs} legs stored in {timeout_s:.0f} s")
        time.sleep(0.02)
    return time.time()


def _stop(procs: list[mp.process.BaseProcess]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: both finish their batch and exit
    for p in procs:
        p.join(60)


def run_rounds(
    rounds: int = 3, legs: int = 200_000, batch_max: int = 20_000, keep: bool = False, echo: Any = print
) -> tuple[float, float]:
    """``rounds`` independent benchmark rounds; returns the median (rated, pass-through) legs/s."""
    echo(_machine())
    rated: list[float] = []
    passthrough: list[float] = []
    for i in range(rounds):
        echo(f"--- round {i + 1} of {rounds}")
        r, p = run_bench(legs=legs, batch_max=batch_max, keep=keep, echo=echo, show_machine=False)
        rated.append(r.rate)
        passthrough.append(p.rate)
    rated_median, passthrough_median = statistics.median(rated), statistics.median(passthrough)
    ratio = rated_median / passthrough_median if passthrough_median else 0.0
    met = rated_median >= 20_000 and ratio >= 0.5
    echo(f"=== median of {rounds} rounds of {legs} legs")
    echo(f"pass-through:      {passthrough_median:,.0f} legs/s  (rounds: "
         f"{', '.join(f'{x:,.0f}' for x in passthrough)})")
    echo(f"rated and stored:  {rated_median:,.0f} legs/s  (rounds: {', '.join(f'{x:,.0f}' for x in rated)})")
    echo(f"ratio rated/pass-through: {ratio:.2f}  "
         f"(goal >= 20,000 legs/s and >= 0.50: {'met' if met else 'NOT met'})")
    return rated_median, passthrough_median


def run_bench(
    legs: int = 200_000,
    batch_max: int = 20_000,
    keep: bool = False,
    echo: Any = print,
    show_machine: bool = True,
) -> tuple[Timing, Timing]:
    names = Names(uuid.uuid4().hex[:8])
    ctx = mp.get_context("spawn")
    admin = AdminClient(base_config())
    topics = [names.topic("legs"), names.topic("cdr"), names.topic("balances"), *names.config_topics.values()]
    compacted = {names.topic("balances"), *names.config_topics.values()}
    futures = admin.create_topics(
        [
            NewTopic(
                t,
                6 if t in (names.topic("legs"), names.topic("cdr"), names.topic("balances")) else 1,
                1,
                config={"cleanup.policy": "compact"} if t in compacted else {},
            )
            for t in topics
        ]
    )
    for f in futures.values():
        f.result()
    ch = clickhouse_client()
    ch.execute(f"CREATE TABLE {names.table('cdr')} AS callback.cdr")
    ch.execute(RAW_DDL.format(table=names.table("raw")))
    _create_views(ch, names)
    started: list[mp.process.BaseProcess] = []
    try:
        if show_machine:
            echo(_machine())
        publish_reference(names.run, topics=names.config_topics)
        t0 = time.monotonic()
        produce(names.topic("legs"), leg_records(make_legs(names.run, legs)), timeout_s=600)
        echo(f"produced {legs} legs to {names.topic('legs')} in {time.monotonic() - t0:.1f} s (not timed)")

        first, done = ctx.RawValue("d", 0.0), ctx.RawValue("q", 0)
        raw_opts = SinkOptions(
            group_id=f"bench-{names.run}-raw",
            topic=names.topic("legs"),
            table=names.table("raw"),
            columns=RAW_COLUMNS,
        )
        procs = [ctx.Process(target=_sink_child, args=(raw_opts, True, first, done), name="pass-through")]
        started += procs
        for p in procs:
            p.start()
        end = _wait(done, legs, procs, 1800)
        _stop(procs)
        passthrough = Timing(legs, end - first.value)
        echo(
            f"pass-through (consume + insert unrated): {passthrough.rate:,.0f} legs/s "
            f"({legs} legs in {passthrough.seconds:.2f} s)"
        )

        first, rated, done = ctx.RawValue("d", 0.0), ctx.RawValue("q", 0), ctx.RawValue("q", 0)
        rater_opts = RaterOptions(
            instance=names.run,
            group_id=f"bench-{names.run}-rater",
            legs_topic=names.topic("legs"),
            cdr_topic=names.topic("cdr"),
            balances_topic=names.topic("balances"),
            reference_topics=tuple(names.config_topics.values()),
            reference_aliases={v: k for k, v in names.config_topics.items()},
            batch_max=batch_max,
        )
        sink_opts = SinkOptions(
            group_id=f"bench-{names.run}-sink", topic=names.topic("cdr"), table=names.table("cdr")
        )
        procs = [
            ctx.Process(target=_rater_child, args=(rater_opts, first, rated), name="rater"),
            ctx.Process(
                target=_sink_child, args=(sink_opts, False, ctx.RawValue("d", 0.0), done), name="sink"
            ),
        ]
        started += procs
        for p in procs:
            p.start()
        rater_end = _wait(rated, legs, procs, 1800)
        end = _wait(done, legs, procs, 1800)
        _stop(procs)
        rated_stored = Timing(legs, end - first.value)
        echo(f"  (the rater alone committed all legs after {rater_end - first.value:.2f} s)")
        total = ch.execute(f"SELECT count(), sum(price) FROM {names.table('cdr')} FINAL")[0]
        echo(
            f"rated and stored (rater + sink processes):  {rated_stored.rate:,.0f} legs/s "
            f"({legs} legs in {rated_stored.seconds:.2f} s; {total[0]} CDRs, revenue {total[1]})"
        )
        ratio = rated_stored.rate / passthrough.rate if passthrough.rate else 0.0
        met = rated_stored.rate >= 20_000 and ratio >= 0.5
        verdict = "met" if met else "NOT met"
        echo(f"ratio rated/pass-through: {ratio:.2f}  (goal >= 20,000 legs/s and >= 0.50: {verdict})")
        return rated_stored, passthrough
    finally:
        _stop([p for p in started if p.pid is not None])
        if not keep:
            for view in VIEW_TABLES:
                ch.execute(f"DROP TABLE IF EXISTS {names.table(view)}_mv")
                ch.execute(f"DROP TABLE IF EXISTS {names.table(view)}")
            ch.execute(f"DROP TABLE IF EXISTS {names.table('cdr')}")
            ch.execute(f"DROP TABLE IF EXISTS {names.table('raw')}")
            for f in admin.delete_topics(topics).values():
                f.result()
        ch.disconnect()


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
