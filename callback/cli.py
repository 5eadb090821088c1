"""The single ``callback`` console script.

Each component owns its own Typer sub-app in its package (``infra/cli.py``, ``schemas/cli.py``,
``producers/cli.py``, ``rating_stream/cli.py``, ``processors/cli.py``); this module only mounts them,
so heavy imports (Faust, panoramisk) happen only for the subcommand that needs them.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from callback.settings import get_settings

app = typer.Typer(help="Callback + rating pipeline (Kafka, ClickHouse, Asterisk AMI).", no_args_is_help=True)

#: (module, attribute) of each component's CLI registration hook: ``register(app: typer.Typer)``.
_COMPONENTS = (
    "infra.cli",
    "infra.pbx_sim.cli",
    "schemas.cli",
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
