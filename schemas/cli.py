"""CLI: ``callback schemas export``.

(``callback config load``, which publishes a carrier configuration to Kafka, lives in
``callback/publish.py``: the contracts package does no I/O.)
"""

from __future__ import annotations

from pathlib import Path

import typer

schemas_app = typer.Typer(help="Message contracts.", no_args_is_help=True)


@schemas_app.command("export")
def export_cmd(
    directory: Path = typer.Argument(..., help="where to write one JSON Schema per topic"),
) -> None:
    """Write a JSON Schema per topic (what other teams code against)."""
    from schemas.export import export

    try:
        written = export(directory)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else directory
        reason = exc.strerror or str(exc)
        typer.secho(f"cannot write the JSON Schemas to {directory}: {where}: {reason}", fg="red", err=True)
        raise typer.Exit(1) from None
    for path in written:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(schemas_app, name="schemas")
