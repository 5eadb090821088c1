"""CLI of the rating stream: ``callback rating``, ``cdr-sink``, ``quote``, ``rerate``, ``bench rating``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

bench_app = typer.Typer(help="Benchmarks on the local stack.", no_args_is_help=True)


def rating_cmd(
    instance: str = typer.Option(
        "0", help="names this rater in logs and CDRs; one rater per group (a second one fences the first)"
    ),
    batch_max: int = typer.Option(20_000, help="legs per Kafka transaction at most"),
    metrics_port: int | None = typer.Option(None, help="serve Prometheus /metrics on 127.0.0.1:PORT"),
    legs_topic: str = typer.Option("callback.legs", hidden=True),
    cdr_topic: str = typer.Option("cdr.rated", hidden=True),
    balances_topic: str = typer.Option("accounts.balances", hidden=True),
    group_id: str = typer.Option("callback-rater", hidden=True),
    idle_exit_s: float | None = typer.Option(None, hidden=True, help="exit after this long without legs"),
    dedupe_window_s: float = typer.Option(
        6 * 3600.0,
        "--dedupe-window-s",
        min=600.0,
        help="how long charged leg ids are remembered; a leg published before that goes to review",
    ),
) -> None:
    """Rate finished legs, debit payers, write CDRs and balances: exactly once (Kafka transactions)."""
    from rating_stream import metrics
    from rating_stream.rater import RaterOptions, run_rater

    metrics.serve(metrics_port)
    opts = RaterOptions(
        instance=instance,
        group_id=group_id,
        legs_topic=legs_topic,
        cdr_topic=cdr_topic,
        balances_topic=balances_topic,
        batch_max=batch_max,
        idle_exit_s=idle_exit_s,
        dedupe_window_s=dedupe_window_s,
    )
    sys.exit(run_rater(opts))


def cdr_sink_cmd(
    instance: str = typer.Option("0", help="stable instance name (static consumer-group membership)"),
    batch_max: int = typer.Option(20_000, help="rows per ClickHouse insert at most"),
    flush_interval_s: float = typer.Option(1.0, help="insert at least this often when rows are pending"),
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
        topic=topic,
        table=table,
        batch_max=batch_max,
        flush_interval_s=flush_interval_s,
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
    """Re-price stored legs with the current tariffs; changed prices become new CDR versions."""
    from rating_stream.rerate import parse_time, rerate

    report = rerate(parse_time(since), parse_time(until) if until else None, dry_run=dry_run)
    typer.echo(report.summary())


@bench_app.command("rating")
def bench_rating_cmd(
    legs: int = typer.Option(200_000, help="legs to push through each path"),
    batch_max: int = typer.Option(20_000, help="legs per rater transaction"),
    rounds: int = typer.Option(3, min=1, help="rounds on fresh topics; medians are reported"),
    keep: bool = typer.Option(False, help="keep the bench topics and tables afterwards"),
) -> None:
    """Legs/s rated and stored vs. a raw pass-through on the same stack, and their ratio."""
    from rating_stream.bench import run_rounds

    run_rounds(rounds=rounds, legs=legs, batch_max=batch_max, keep=keep)


def register(app: typer.Typer) -> None:
    app.command("rating")(rating_cmd)
    app.command("cdr-sink")(cdr_sink_cmd)
    app.command("quote")(quote_cmd)
    app.command("rerate")(rerate_cmd)
    app.add_typer(bench_app, name="bench")
