"""``callback pbx-sim``: run the simulated Asterisk on a TCP port until SIGTERM/SIGINT.

It prints ``pbx-sim listening on HOST:PORT`` on stdout once it accepts connections, so a
launcher that asked for ``--port 0`` learns the port it got.
"""

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from infra.pbx_sim.scenario import LoadProfile, Scenario, ScenarioError, load_scenario
from infra.pbx_sim.server import PbxSimulator, SimulatorOptions

log = logging.getLogger(__name__)


def pbx_sim(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="AMI port (0 = any free port).")] = 5038,
    scenario: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Scenario YAML; without it every number answers."),
    ] = None,
    speed: Annotated[float, typer.Option(min=0.001, help="Clock speed factor: 10 = ten times faster.")] = 1.0,
    username: Annotated[
        str, typer.Option(envvar="CALLBACK_PBX_SIM_USERNAME", help="AMI username.")
    ] = "callback",
    secret: Annotated[str, typer.Option(envvar="CALLBACK_PBX_SIM_SECRET", help="AMI secret.")] = "callback",
    load_rate: Annotated[float | None, typer.Option(help="Load mode: initiation calls per second.")] = None,
    load_did: Annotated[str | None, typer.Option(help="Load mode: the DID they call.")] = None,
    load_seconds: Annotated[float, typer.Option(help="Load mode: how long to offer calls.")] = 60.0,
    load_ani: Annotated[
        list[str] | None, typer.Option(help="Load mode: ANI to pick from (repeatable).")
    ] = None,
    load_ring_timeout: Annotated[float, typer.Option(help="Load mode: callers give up after this.")] = 30.0,
    load_seed: Annotated[int | None, typer.Option(help="Load mode: random seed for ANI choice.")] = None,
    immediate_traffic: Annotated[
        bool,
        typer.Option(help="Start inbound calls and load at once, not at the first AMI login."),
    ] = False,
    action_log: Annotated[
        Path | None, typer.Option(help="Append every received AMI action to this file as JSON lines.")
    ] = None,
) -> None:
    """Simulated Asterisk 18 PBX speaking AMI, for tests, benchmarks and the demo."""
    try:
        scene = load_scenario(scenario) if scenario else Scenario()
    except ScenarioError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    load = None
    if load_rate is not None:
        if not load_did:
            typer.echo("--load-did is required with --load-rate", err=True)
            raise typer.Exit(2)
        load = LoadProfile(
            rate=load_rate,
            did=load_did,
            seconds=load_seconds,
            ani_pool=tuple(load_ani or ()),
            ring_timeout=load_ring_timeout,
            seed=load_seed,
        )
    options = SimulatorOptions(
        host=host,
        port=port,
        username=username,
        secret=secret,
        speed=speed,
        action_log_path=action_log,
        load=load,
        traffic_starts="start" if immediate_traffic else "login",
    )
    asyncio.run(_run(scene, options))


async def _run(scene: Scenario, options: SimulatorOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with PbxSimulator(scene, options) as sim:
        typer.echo(f"pbx-sim listening on {sim.host}:{sim.port}")
        await stop.wait()
        log.info("pbx-sim shutting down")


def register(app: typer.Typer) -> None:
    """Mount ``pbx-sim`` on the ``callback`` CLI."""
    app.command("pbx-sim")(pbx_sim)
