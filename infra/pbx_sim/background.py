"""Run the simulator on its own thread, for synchronous tests and scripts.

End-to-end tests drive the pipeline's processes (subprocesses, Kafka consumers) from plain
synchronous pytest code; they need an AMI server that keeps running while they block.
:class:`BackgroundSimulator` gives them one in-process, so they can still read
``action_log`` and steer calls (``call(lambda pbx: pbx.start_inbound(...))``) directly::

    with BackgroundSimulator(scenario, SimulatorOptions(port=0, speed=10)) as sim:
        run_pipeline(ami_host=sim.host, ami_port=sim.port)
        assert sim.action_log.count("Originate", ChannelId=...) == 1
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

from infra.pbx_sim.action_log import ActionLog
from infra.pbx_sim.pbx import Pbx
from infra.pbx_sim.scenario import Scenario
from infra.pbx_sim.server import PbxSimulator, SimulatorOptions

T = TypeVar("T")


class BackgroundSimulator:
    def __init__(self, scenario: Scenario, options: SimulatorOptions | None = None) -> None:
        self.scenario = scenario
        self.options = options or SimulatorOptions()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sim: PbxSimulator | None = None
        self._stop: asyncio.Event | None = None
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name="pbx-sim", daemon=True)

    # ------------------------------------------------------------------ thread side

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self._sim = PbxSimulator(self.scenario, self.options)
            await self._sim.start()
        except BaseException as exc:  # report start-up failures (port in use...) to the caller
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await self._sim.stop()

    # ------------------------------------------------------------------ caller side

    def start(self, timeout: float = 10.0) -> BackgroundSimulator:
        self._thread.start()
        self._ready.result(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def simulator(self) -> PbxSimulator:
        if self._sim is None:
            raise RuntimeError("simulator not started")
        return self._sim

    @property
    def host(self) -> str:
        return self.simulator.host

    @property
    def port(self) -> int:
        return self.simulator.port

    @property
    def action_log(self) -> ActionLog:
        return self.simulator.action_log

    def call(self, fn: Callable[[Pbx], T], timeout: float = 10.0) -> T:
        """Run ``fn(pbx)`` on the simulator's loop (the engine is not thread-safe) and return its result."""
        if self._loop is None:
            raise RuntimeError("simulator not started")
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(fn(self.simulator.pbx))
            except BaseException as exc:
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout)
