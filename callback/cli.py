"""The single ``callback`` console script.

Each component owns its own Typer sub-app in its package (``infra/cli.py``, ``schemas/cli.py``,
``callback/config_cli.py``, ``producers/cli.py``, ``rating_stream/cli.py``, ``processors/cli.py``);
this module only mounts them, so heavy imports (Faust, panoramisk) happen only for the subcommand
that needs them.

Errors: whatever escapes a command ends it with one line on stderr (``error: ...``) and exit code
1, never a traceback: the errors a person makes (Kafka not running, a bad file, a bad value, a
folder that cannot be written) read as what to fix; anything else names its exception type and
says that ``callback --verbose <command> ...`` shows the traceback. Logging goes to stderr in one
format, librdkafka's own log included (``callback.kafka_io``: WARNING and above, once per condition).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from callback.settings import get_settings


def one_line(exc: BaseException) -> str:
    """What went wrong, in one line a person can act on."""
    from confluent_kafka import KafkaError, KafkaException

    from callback.kafka_io import KafkaUnreachable
    from schemas.carrier_config import ConfigError

    if isinstance(exc, KafkaUnreachable):
        text = str(exc)
    elif isinstance(exc, ConfigError):
        text = exc.summary()
    elif isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        detail = error.str() if isinstance(error, KafkaError) else str(exc)
        bootstrap = get_settings().kafka.bootstrap_servers
        text = f"Kafka at {bootstrap}: {detail}"
        if isinstance(error, KafkaError) and error.code() in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TIMED_OUT,
        ):
            text += " (is it running? `callback stack up` starts the local stack)"
    elif isinstance(exc, UnicodeDecodeError):
        bad = exc.object[exc.start : exc.start + 1]
        text = f"not UTF-8 text: {exc.reason} (byte {bad!r} at offset {exc.start})"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename is not None else exc.strerror
    elif isinstance(exc, ValueError | TimeoutError) and str(exc):
        text = str(exc)  # a value that is not what it should be (a time, a number, a setting)
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (`callback --verbose ...` shows the traceback)"
    return " ".join(text.split())  # one line, whatever the message held


class _OneLineErrors(TyperGroup):
    """The root group: a command's exception becomes ``error: <one line>`` and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):  # usage errors, exit codes: typer's own
            raise
        except Exception as exc:
            if ctx.params.get("verbose"):
                raise
            typer.secho(f"error: {one_line(exc)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    help="Callback + rating pipeline (Kafka, ClickHouse, Asterisk AMI).",
    no_args_is_help=True,
    cls=_OneLineErrors,
    pretty_exceptions_enable=False,
)

#: (module, attribute) of each component's CLI registration hook: ``register(app: typer.Typer)``.
_COMPONENTS = (
    "infra.cli",
    "infra.pbx_sim.cli",
    "schemas.cli",
    "callback.config_cli",
    "producers.cli",
    "processors.cli",
    "rating_stream.cli",
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    level = logging.DEBUG if verbose else getattr(logging, get_settings().log_level.upper(), logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )


def _mount_components() -> None:
    for module_name in _COMPONENTS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name + ".").startswith(exc.name + "."):
                continue  # component not installed in this build
            raise
        module.register(app)


_mount_components()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
