"""CLI: ``callback schemas export`` and ``callback config load``."""

from __future__ import annotations

from pathlib import Path

import typer

from schemas.carrier_config import ConfigError, load_carrier_config

schemas_app = typer.Typer(help="Message contracts.", no_args_is_help=True)
config_app = typer.Typer(help="Carrier reference data.", no_args_is_help=True)


@schemas_app.command("export")
def export_cmd(
    directory: Path = typer.Argument(..., help="where to write one JSON Schema per topic"),
) -> None:
    """Write a JSON Schema per topic (what other teams code against)."""
    from schemas.export import export

    for path in export(directory):
        typer.echo(str(path))


@config_app.command("load")
def load_cmd(
    file: Path = typer.Argument(..., help="carrier configuration YAML"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate only, publish nothing"),
) -> None:
    """Validate a carrier configuration and publish it to the compacted config.* topics."""
    try:
        config = load_carrier_config(file)
    except ConfigError as exc:
        typer.secho(f"rejected {file}: {len(exc.problems)} problem(s), nothing published", fg="red", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    if dry_run:
        typer.echo(f"{file}: valid ({sum(1 for _ in config.records())} records)")
        return
    from confluent_kafka import KafkaException

    from schemas.publish import publish_config

    try:
        counts = publish_config(config)
    except KafkaException as exc:
        typer.secho(f"could not publish {file}: {exc.args[0]}", fg="red", err=True)
        raise typer.Exit(1) from None
    for topic, n in sorted(counts.items()):
        typer.echo(f"{topic:28} {n:5d} records")
    typer.echo(f"published {sum(counts.values())} records from {file}")


def register(app: typer.Typer) -> None:
    app.add_typer(schemas_app, name="schemas")
    app.add_typer(config_app, name="config")
