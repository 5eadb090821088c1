"""CLI of the rating stream: ``callback rating``, ``cdr-sink``, ``quote``, ``rerate``, ``bench rating``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

bench_app = typer.Typer(
    help="Benchmarks on the local stack: all of them (no subcommand), or one.", invoke_without_command=True
)


@bench_app.callback()
def bench_all_cmd(
    ctx: typer.Context,
    quick: bool = typer.Option(False, help="small sizes: a smoke test of every benchmark"),
    as_json: bool = typer.Option(False, "--json", help="print the results as one JSON object"),
) -> None:
    """Every benchmark (Kafka round trip, rating, processors); the results, with the machine, the load
    and each goal, go to bench/results/<date>.json and .md."""
    if ctx.invoked_subcommand is not None:
        return
    import json
    import sys

    from infra.bench import markdown, run_all, write

    echo = (lambda text: print(text, file=sys.stderr)) if as_json else print
    result = run_all(quick=quick, echo=echo)
    json_path, md_path = write(result)
    if as_json:
        print(json.dumps(result, default=str))
    else:
        print(markdown(result))
        print(f"written: {json_path}, {md_path}")
    checks_ok = bool(result["processors"].get("checks_ok"))
    raise typer.Exit(0 if checks_ok else 1)


def rating_cmd(
    instance: str = typer.Option(
        "0",
        help="names this rater in logs and CDRs and its transactional id <group>-<instance>; raters in "
        "one group share the partitions, so give each its own (two with one name fence each other)",
    ),
    batch_max: int = typer.Option(20_000, help="legs per Kafka transaction at most"),
    min_commit_interval_s: float = typer.Option(
        0.1,
        min=0.0,
        help="when nothing more is waiting on Kafka, commit what is rated, but not sooner than this "
        "after the previous transaction began (a trickle of legs must not become a transaction each)",
    ),
    metrics_port: int | None = typer.Option(None, help="serve Prometheus /metrics on 127.0.0.1:PORT"),
    legs_topic: str = typer.Option("callback.legs", hidden=True),
    rerates_topic: str = typer.Option("cdr.rerates", hidden=True),
    cdr_topic: str = typer.Option("cdr.rated", hidden=True),
    balances_topic: str = typer.Option("accounts.balances", hidden=True),
    ledger_topic: str = typer.Option("accounts.ledger", hidden=True),
    group_id: str = typer.Option("callback-rater", hidden=True),
    idle_exit_s: float | None = typer.Option(None, hidden=True, help="exit after this long without legs"),
    dedupe_window_s: float = typer.Option(
        6 * 3600.0,
        "--dedupe-window-s",
        min=600.0,
        help="how long charged leg ids are remembered; a leg published before that goes to review",
    ),
) -> None:
    """Rate finished legs, debit payers, write CDRs, ledger entries and balances: exactly once (Kafka
    transactions)."""
    from rating_stream import metrics
    from rating_stream.rater import RaterOptions, run_rater

    metrics.serve(metrics_port)
    opts = RaterOptions(
        instance=instance,
        group_id=group_id,
        legs_topic=legs_topic,
        rerates_topic=rerates_topic,
        cdr_topic=cdr_topic,
        balances_topic=balances_topic,
        ledger_topic=ledger_topic,
        batch_max=batch_max,
        min_commit_interval_s=min_commit_interval_s,
        idle_exit_s=idle_exit_s,
        dedupe_window_s=dedupe_window_s,
    )
    sys.exit(run_rater(opts))


def cdr_sink_cmd(
    instance: str = typer.Option(
        "0",
        help="stable name of this sink, unique within its group: its static group membership id is "
        "<group>-<instance> (two sinks with the same name fence each other)",
    ),
    batch_max: int = typer.Option(20_000, help="rows per ClickHouse insert at most"),
    flush_interval_s: float = typer.Option(1.0, help="insert at least this often when rows are pending"),
    min_flush_interval_s: float = typer.Option(
        0.1,
        help="when nothing more is waiting on Kafka, insert what is pending, but not sooner than this "
        "after the previous insert (a trickle of CDRs must not become an insert per row)",
    ),
    metrics_port: int | None = typer.Option(None, help="serve Prometheus /metrics on 127.0.0.1:PORT"),
    topic: str = typer.Option("cdr.rated", hidden=True),
    table: str = typer.Option("callback.cdr", hidden=True),
    group_id: str = typer.Option("callback-cdr-sink", hidden=True),
    idle_exit_s: float | None = typer.Option(None, hidden=True, help="exit after this long without CDRs"),
) -> None:
    """Store rated CDRs in ClickHouse in batches; offsets are committed only after the insert."""
    from rating_stream import metrics
    from rating_stream.sink import SinkOptions, run_sink

    metrics.serve(metrics_port)
    opts = SinkOptions(
        group_id=group_id,
        instance=instance,
        topic=topic,
        table=table,
        batch_max=batch_max,
        flush_interval_s=flush_interval_s,
        min_flush_interval_s=min_flush_interval_s,
        idle_exit_s=idle_exit_s,
    )
    sys.exit(run_sink(opts))


def quote_cmd(
    tariff: str = typer.Option(..., "--tariff", help="tariff id"),
    number: str = typer.Option(..., "--number", help="destination number (digits)"),
    seconds: str = typer.Option(..., "--seconds", help="answered seconds (may have a fraction)"),
    config: str = typer.Option(
        "", "--config", help="carrier YAML to read the tariff from instead of the config.tariffs topic"
    ),
) -> None:
    """Print the price breakdown of one leg."""
    from rating_stream.quote_tool import QuoteError, format_quote, load_tariff, parse_seconds

    try:
        compiled = load_tariff(tariff, Path(config) if config else None)
        typer.echo(format_quote(compiled, number, parse_seconds(seconds)))
    except QuoteError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None


def rerate_cmd(
    since: str = typer.Option(
        ...,
        "--since",
        help="re-price legs that started at or after this UTC time "
        "(ISO 8601, e.g. 2024-05-01 or 2024-05-01T12:00)",
    ),
    until: str | None = typer.Option(None, "--until", help="and before this time"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only report what would change"),
) -> None:
    """Re-price stored legs with the current tariffs; changed prices become new CDR versions, applied
    (with the balance corrections) by the running raters."""
    from rating_stream.rerate import parse_time, rerate

    report = rerate(parse_time(since), parse_time(until) if until else None, dry_run=dry_run)
    typer.echo(report.summary())


@bench_app.command("rating")
def bench_rating_cmd(
    legs: int = typer.Option(200_000, help="legs to push through each path"),
    batch_max: int = typer.Option(20_000, help="legs per rater transaction at most"),
    rounds: int = typer.Option(3, min=1, help="rounds on fresh topics; medians are reported"),
    raters: int = typer.Option(1, min=1, max=6, help="raters in one group sharing the legs' 6 partitions"),
    latency: bool = typer.Option(
        False, "--latency", help="also measure leg -> ClickHouse latency at a steady --rate"
    ),
    rate: float = typer.Option(500.0, help="legs/s offered in the latency run"),
    seconds: float = typer.Option(20.0, help="length of the latency run, after 3 s of warm-up"),
    keep: bool = typer.Option(False, help="keep the bench topics and tables afterwards"),
    as_json: bool = typer.Option(False, "--json", help="print the figures as one JSON object at the end"),
) -> None:
    """Legs/s rated and stored vs. a raw pass-through on the same stack, their ratio, the CPU per leg
    and (--latency) leg -> ClickHouse latency; exits 1 if a round did not store every leg."""
    import json

    from rating_stream.bench import CountMismatch, run_latency, run_rounds

    echo = (lambda text: print(text, file=sys.stderr)) if as_json else print
    try:
        summary = run_rounds(
            rounds=rounds, legs=legs, batch_max=batch_max, keep=keep, echo=echo, raters=raters
        )
        figures = summary.as_dict()
        if latency:
            figures["latency"] = run_latency(rate=rate, seconds=seconds, echo=echo).__dict__
    except CountMismatch as exc:
        typer.echo(f"error: the benchmark's counts do not add up: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(figures))


@bench_app.command("processors")
def bench_processors_cmd(
    quick: bool = typer.Option(False, help="small sizes: a smoke test of every phase (about 2 minutes)"),
    skip_bare: bool = typer.Option(False, help="do not measure the bare Faust agent (no callbacks/s goal)"),
    keep: bool = typer.Option(False, help="keep the process logs and the bare agent's topics"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object (progress goes to stderr)"),
    rates: str | None = typer.Option(None, help="offered callbacks/s of the ramp, e.g. 5,10,20,40"),
    step_s: float | None = typer.Option(None, help="seconds each rate of the ramp is offered"),
    retries: str | None = typer.Option(None, help="pending retries per lateness round, e.g. 1000,10000"),
    bare_events: int | None = typer.Option(None, help="events through the bare Faust agent"),
    ramp_only: bool = typer.Option(False, help="experiments: only the ramp (and the bare agent)"),
    worker_env: list[str] = typer.Option(
        [], "--worker-env", help="KEY=VALUE for the processors worker's environment (experiments, e.g. "
        "PRODUCER_LINGER=0.005: Faust reads its settings from the environment); repeatable"
    ),
    profile: Path | None = typer.Option(
        None, help="run the worker under cProfile during the ramp, write the stats here and print the "
        "top functions (the ramp's figures are then slower than the real thing)"
    ),
) -> None:
    """Callbacks/s, latencies, retry lateness and SIGKILL recovery of the processors worker, against a
    bare Faust agent on the same broker (needs the local stack: `callback stack up`)."""
    from processors.bench import BenchOptions, main

    opts = BenchOptions.quick() if quick else BenchOptions()
    opts.skip_bare, opts.keep, opts.profile, opts.ramp_only = skip_bare, keep, profile, ramp_only
    if rates:
        opts.rates = tuple(float(x) for x in rates.split(",") if x.strip())
    if step_s:
        opts.step_s = step_s
    if retries:
        opts.retry_sizes = tuple(int(x) for x in retries.split(",") if x.strip())
    if bare_events:
        opts.bare_events = bare_events
    opts.worker_env = dict(item.split("=", 1) for item in worker_env)
    raise typer.Exit(main(opts, as_json=as_json))


def register(app: typer.Typer) -> None:
    app.command("rating")(rating_cmd)
    app.command("cdr-sink")(cdr_sink_cmd)
    app.command("quote")(quote_cmd)
    app.command("rerate")(rerate_cmd)
    app.add_typer(bench_app, name="bench")
