"""CLI of the AMI side: ``callback producer``, ``originator``, ``web`` and ``ami-replay``.

Imports of the heavy parts (panoramisk, aiohttp, Kafka clients) happen inside each command, so
``callback --help`` stays fast and ``ami-replay`` works without a broker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

_DIDS_HELP = "comma-separated access numbers (overrides config.dids; for tests and replays)"
_CONFIG_HELP = "carrier YAML to read servers/DIDs/users/settings from instead of the config.* topics"

ConfigOpt = Annotated[Path | None, typer.Option("--config", help=_CONFIG_HELP)]
MetricsOpt = Annotated[int, typer.Option("--metrics-port", help="Prometheus /metrics port (0 = off)")]


def _split(values: str | None) -> list[str]:
    return [v.strip() for v in (values or "").split(",") if v.strip()]


def ami_replay(
    file: Annotated[
        Path, typer.Argument(help="JSON array of AMI events (e.g. fixtures/asterisk-ami/*.json)")
    ],
    pbx: Annotated[str, typer.Option("--pbx", help="PBX id to stamp on the events")] = "replay",
    dids: Annotated[str, typer.Option("--dids", help=_DIDS_HELP)] = "",
) -> None:
    """Print the domain events a recorded AMI transcript translates to, as JSON lines. No Kafka."""
    from producers.ami_fields import normalize_number
    from producers.replay import TranscriptError, replay_file

    access_numbers = [n for n in (normalize_number(d) for d in _split(dids)) if n]
    try:
        records = replay_file(file, pbx, access_numbers)
    except TranscriptError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    for record in records:
        sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    rejects = sum(1 for r in records if "reject" in r)
    typer.echo(f"{file.name}: {len(records) - rejects} records, {rejects} rejected", err=True)


def producer(
    pbx: Annotated[str, typer.Option("--pbx", help="PBX (Callback Server) id, as in config.servers")],
    host: Annotated[str | None, typer.Option("--host", envvar="CALLBACK_AMI_HOST")] = None,
    port: Annotated[int | None, typer.Option("--port", envvar="CALLBACK_AMI_PORT")] = None,
    username: Annotated[str | None, typer.Option("--username", envvar="CALLBACK_AMI_USERNAME")] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            envvar="CALLBACK_AMI_SECRET",
            help="AMI secret of this PBX (default: ami.secrets.<pbx> of the settings)",
            show_envvar=True,
        ),
    ] = None,
    config: ConfigOpt = None,
    dids: Annotated[str | None, typer.Option("--dids", help=_DIDS_HELP)] = None,
    metrics_port: MetricsOpt = 0,
    buffer_size: Annotated[int, typer.Option("--buffer", help="records held while Kafka is down")] = 100_000,
) -> None:
    """Read a PBX's AMI events and publish domain events to pbx.events / callback.requests."""
    from producers.ami_fields import normalize_number
    from producers.ami_producer import ProducerOptions, run_producer
    from producers.reference_data import resolve_ami_endpoint

    endpoint = resolve_ami_endpoint(
        pbx, config=config, host=host, port=port, username=username, secret=secret
    )
    override = None
    if dids is not None:
        override = frozenset(n for n in (normalize_number(d) for d in _split(dids)) if n)
    options = ProducerOptions(
        endpoint=endpoint,
        dids_override=override,
        config_file=config,
        buffer_size=buffer_size,
        metrics_port=metrics_port,
    )
    raise typer.Exit(run_producer(options))


def originator(
    journal: Annotated[
        Path,
        typer.Option(
            "--journal",
            envvar="CALLBACK_ORIGINATOR_JOURNAL",
            help="append-only journal of executed command ids (durable disk; one per originator instance)",
        ),
    ] = Path("originator.journal"),
    config: ConfigOpt = None,
    group: Annotated[str, typer.Option("--group", help="Kafka consumer group")] = "callback-originator",
    metrics_port: MetricsOpt = 0,
    max_age: Annotated[
        float, typer.Option("--max-age", help="seconds after which a command is stale")
    ] = 300.0,
    start_at: Annotated[
        str, typer.Option("--start-at", help="where a NEW consumer group starts: latest | earliest")
    ] = "latest",
) -> None:
    """Execute pbx.commands as AMI actions on the right PBX, each command id at most once."""
    from producers.originator import OriginatorOptions, run_originator

    options = OriginatorOptions(
        journal_path=journal,
        config_file=config,
        group_id=group,
        metrics_port=metrics_port,
        max_age_s=max_age,
        start_at=start_at,
    )
    raise typer.Exit(run_originator(options))


def web(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8080,
    config: ConfigOpt = None,
    export_openapi: Annotated[
        Path | None, typer.Option("--export-openapi", help="write the OpenAPI document to this file and exit")
    ] = None,
    user_rate: Annotated[float, typer.Option("--user-rate", help="requests per minute per user")] = 6.0,
    number_rate: Annotated[float, typer.Option("--number-rate", help="requests per minute per number")] = 3.0,
    min_number_digits: Annotated[
        int, typer.Option("--min-number-digits", min=1, help="shortest callback number accepted, in digits")
    ] = 6,
    emergency_numbers: Annotated[
        str | None,
        typer.Option(
            "--emergency-numbers",
            help="comma-separated numbers never called back, alone or after a country code; replaces "
            "the built-in list (112, 911, 999, 000, 08, 110, 118, 119 and national ones: README); "
            "'' for none",
        ),
    ] = None,
    login_failures_per_user: Annotated[
        float, typer.Option("--login-failures-per-user", help="wrong passwords per minute per username")
    ] = 10.0,
    login_failures_per_address: Annotated[
        float,
        typer.Option("--login-failures-per-address", help="wrong passwords per minute per client address"),
    ] = 30.0,
    hash_threads: Annotated[
        int | None,
        typer.Option(
            "--hash-threads", min=1, help="threads checking passwords (default: half the CPUs, 1 to 4)"
        ),
    ] = None,
) -> None:
    """The web callback API: POST /v1/callbacks -> callback.requests."""
    if export_openapi is not None:
        from producers.openapi import render_openapi

        export_openapi.write_text(render_openapi())
        typer.echo(str(export_openapi))
        return
    from producers.web import DEFAULT_EMERGENCY_NUMBERS, NumberPolicy, WebOptions, run_web

    emergency = DEFAULT_EMERGENCY_NUMBERS if emergency_numbers is None else tuple(_split(emergency_numbers))
    try:
        NumberPolicy.of(min_number_digits, emergency)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--emergency-numbers") from None
    if login_failures_per_user <= 0 or login_failures_per_address <= 0:
        raise typer.BadParameter("must be positive", param_hint="--login-failures-per-user/-address")
    raise typer.Exit(
        run_web(
            WebOptions(
                host=host,
                port=port,
                config_file=config,
                user_per_minute=user_rate,
                number_per_minute=number_rate,
                min_number_digits=min_number_digits,
                emergency_numbers=emergency,
                failed_logins_per_user=login_failures_per_user,
                failed_logins_per_address=login_failures_per_address,
                hash_threads=hash_threads,
            )
        )
    )


def register(app: typer.Typer) -> None:
    app.command("ami-replay")(ami_replay)
    app.command("producer")(producer)
    app.command("originator")(originator)
    app.command("web")(web)
