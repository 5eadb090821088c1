"""CLI: ``callback config load``.

``config load`` never publishes an AMI secret: a server entry that still carries ``ami_secret`` is
loaded without it, with one warning naming the servers and where the secret belongs now (the
settings of the producer and the originator, ``ami.secrets.<server_id>``). The Kafka client is
imported only when the file is published, not for ``--dry-run`` or another command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from schemas.carrier_config import ConfigError, load_carrier_config

config_app = typer.Typer(help="Carrier reference data.", no_args_is_help=True)


def secrets_warning(file: Path, server_ids: list[str]) -> str:
    """The one line ``config load`` prints when the file still carries AMI secrets."""
    ids = ", ".join(sorted(server_ids))
    example = sorted(server_ids)[0].upper()
    return (
        f"warning: {file}: ami_secret of server(s) {ids} not published: AMI secrets belong in the "
        f"settings of callback producer/originator (ami.secrets.<server_id>, e.g. "
        f"CALLBACK_AMI__SECRETS__{example}=...); remove ami_secret from the file"
    )


@config_app.command("load")
def load_cmd(
    file: Path = typer.Argument(..., help="carrier configuration YAML"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate only, publish nothing"),
) -> None:
    """Validate a carrier configuration and publish it to the compacted config.* topics (the users'
    web logins to auth.web_credentials, never to config.users)."""
    try:
        config = load_carrier_config(file)
    except ConfigError as exc:
        typer.secho(f"rejected {file}: {len(exc.problems)} problem(s), nothing published", fg="red", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    if config.legacy_ami_secrets:
        typer.secho(secrets_warning(file, list(config.legacy_ami_secrets)), fg="yellow", err=True)
    if dry_run:
        typer.echo(f"{file}: valid ({sum(1 for _ in config.records())} records)")
        return
    from confluent_kafka import KafkaException

    from callback.kafka_io import check_reachable
    from callback.publish import publish_config

    check_reachable()  # one line within seconds (callback.cli) rather than 30 s of retries
    try:
        counts = publish_config(config)
    except KafkaException as exc:
        error = exc.args[0]
        typer.secho(f"could not publish {file}: {getattr(error, 'str', lambda: error)()}", fg="red", err=True)
        raise typer.Exit(1) from None
    for topic, n in sorted(counts.items()):
        typer.echo(f"{topic:28} {n:5d} records")
    typer.echo(f"published {sum(counts.values())} records from {file}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
