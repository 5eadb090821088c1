"""CLI of the processors: ``callback processors`` and ``callback explain initiation``.

Faust is imported only by ``processors``, so ``explain`` (no servers) and ``--help`` stay fast.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

explain_app = typer.Typer(
    help="Say what the pipeline would decide, and why, without servers.", no_args_is_help=True
)


def processors_cmd(
    instance: Annotated[
        str | None,
        typer.Option(help="names this worker (static group membership, data folder); one per worker"),
    ] = None,
    web_port: Annotated[
        int | None, typer.Option(help="Faust's web port (bound even when unused): one per worker on a host")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="folder for this worker's local data")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus /metrics on 127.0.0.1:PORT")
    ] = None,
) -> None:
    """Run a processors worker: authentication, callback sessions, retry timers, PBX commands.

    Several workers with distinct --instance and --web-port share the partitions."""
    from callback.settings import get_settings
    from processors.run import StartupError, run_processors

    settings = get_settings()
    overrides = {
        "instance": instance,
        "web_port": web_port,
        "data_dir": data_dir,
        "metrics_port": metrics_port,
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes:
        processors = settings.processors.model_validate({**settings.processors.model_dump(), **changes})
        settings = settings.model_copy(update={"processors": processors})
    try:
        code = run_processors(settings)
    except StartupError as exc:
        typer.secho(f"callback processors: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@explain_app.command("initiation")
def explain_initiation(
    config: Annotated[Path, typer.Option("--config", help="the carrier YAML (as `config load` takes)")],
    did: Annotated[str, typer.Option("--did", help="the access number called")],
    ani: Annotated[str | None, typer.Option("--ani", help="the caller ID; omit for a withheld one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """What a call from ANI to DID would do: accepted or refused, why, the hangup cause and SIP
    code, the authentication method, and who pays leg A and the initiation."""
    from processors.explain import explain_did_initiation, render
    from schemas.carrier_config import ConfigError, load_carrier_config

    try:
        carrier = load_carrier_config(config)
    except ConfigError as exc:
        typer.secho(f"{config}: not a valid carrier file:", fg="red", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(2) from None
    try:
        answer = explain_did_initiation(carrier, did=did, ani=ani, at=datetime.now(UTC))
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(answer, sort_keys=True) if as_json else render(answer))


def register(app: typer.Typer) -> None:
    app.command("processors")(processors_cmd)
    app.add_typer(explain_app, name="explain")
