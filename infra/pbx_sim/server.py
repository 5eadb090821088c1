"""The asyncio TCP server that makes the simulated PBX reachable as an Asterisk Manager.

One :class:`PbxSimulator` owns the virtual clock, the call engine, the action log and the
client connections. Each connection gets the banner, has its actions dispatched in order,
and once logged in receives every event its event mask allows, so several AMI clients
(the AMI producer, the originator, a test) can watch the same calls as with Asterisk.

The scenario's inbound calls and the load start, by default, when the first client that
receives call events has logged in: times in the scenario count from then, and the AMI
producer cannot miss the first initiation by connecting a little late.

Typical use in a test::

    async with PbxSimulator(scenario, SimulatorOptions(port=0, speed=20)) as sim:
        manager = panoramisk.Manager(host=sim.host, port=sim.port, ...)
        ...
        assert sim.action_log.count("Originate") == 1
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from infra.pbx_sim.action_log import ActionLog
from infra.pbx_sim.actions import ActionContext, Session, dispatch, response
from infra.pbx_sim.clock import AsyncioScheduler, VirtualClock
from infra.pbx_sim.events import Event, EventBuilder
from infra.pbx_sim.load import iter_load_calls
from infra.pbx_sim.pbx import Pbx
from infra.pbx_sim.protocol import Decoder, FrameTooLarge, Header, Message, banner, encode
from infra.pbx_sim.scenario import LoadProfile, Scenario

log = logging.getLogger(__name__)

#: A client that lets this much unread output pile up is disconnected, as Asterisk drops
#: sessions whose writes time out, instead of the simulator's memory growing without bound.
MAX_BUFFERED_BYTES = 32 * 1024 * 1024


@dataclass
class SimulatorOptions:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "callback"
    secret: str = "callback"
    speed: float = 1.0
    action_log_path: Path | None = None
    load: LoadProfile | None = None
    extra_users: dict[str, str] = field(default_factory=dict)
    #: when the scenario's inbound calls and the load start: "login" = when the first AMI
    #: client that receives call events has logged in (nobody misses the first calls),
    #: "start" = as soon as the server listens
    traffic_starts: Literal["login", "start"] = "login"


class _Connection:
    def __init__(self, conn_id: int, peer: str, writer: asyncio.StreamWriter) -> None:
        self.id = conn_id
        self.label = f"{peer}#{conn_id}"
        self.session = Session(peer=peer)
        self.writer = writer
        self.closed = False

    def send(self, data: bytes) -> None:
        if self.closed or self.writer.is_closing():
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            log.warning("AMI client %s is not reading; disconnecting it", self.label)
            self.close()
            return
        self.writer.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


class PbxSimulator:
    """Asterisk look-alike on a TCP port; ``action_log`` and ``pbx`` are there for tests."""

    def __init__(self, scenario: Scenario, options: SimulatorOptions | None = None) -> None:
        self.scenario = scenario
        self.options = options or SimulatorOptions()
        self.clock = VirtualClock(self.options.speed)
        self.scheduler = AsyncioScheduler(self.clock)
        self.pbx = Pbx(scenario, self.scheduler, self._broadcast)
        self.action_log = ActionLog(self.options.action_log_path)
        self.credentials = {self.options.username: self.options.secret, **self.options.extra_users}
        self._started_at = self.clock.now()
        self._conn_ids = itertools.count(1)
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._traffic_started = False
        self.host = self.options.host
        self.port = self.options.port

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.options.host, self.options.port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._started_at = self.clock.now()
        if self.options.traffic_starts == "start":
            self.start_traffic()
        log.info("PBX simulator listening on %s:%s (speed x%s)", self.host, self.port, self.clock.speed)

    async def stop(self) -> None:
        """Tell clients Asterisk is shutting down, drop every call, close every connection."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for task in list(self._tasks):
            task.cancel()
        self._broadcast(EventBuilder.shutdown(self.clock.now()))
        self.pbx.shutdown()
        for conn in list(self._connections):
            with contextlib.suppress(ConnectionError):
                await conn.writer.drain()
            conn.close()
        if self._handlers:  # let each connection handler see its socket close and return
            _, pending = await asyncio.wait(list(self._handlers), timeout=2.0)
            for task in pending:
                task.cancel()
        await server.wait_closed()
        self.action_log.close()

    async def __aenter__(self) -> PbxSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def start_traffic(self) -> None:
        """Begin the scenario's inbound initiations and the load (once; times count from now)."""
        if self._traffic_started:
            return
        self._traffic_started = True
        self.pbx.schedule_inbound(self.scenario.inbound)
        load = self.options.load or self.scenario.load
        if load is not None:
            self._spawn(self._run_load(load))

    def uptime(self) -> float:
        return self.clock.now() - self._started_at

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ events

    def _broadcast(self, event: Event) -> None:
        cfg = self.scenario.pbx
        data = encode(event.headers(cfg.system_name, cfg.timestamp_events))
        for conn in list(self._connections):
            if conn.session.wants(event.category):
                conn.send(data)

    # ------------------------------------------------------------------ connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        label = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        conn = _Connection(next(self._conn_ids), label, writer)
        self._connections.add(conn)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        decoder = Decoder()

        def send(headers: list[Header]) -> None:
            conn.send(encode(headers))

        ctx = ActionContext(conn.session, self.pbx, self.credentials, self.uptime, send)
        try:
            writer.write(banner(self.scenario.pbx.ami_version))
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for msg in decoder.feed(data):
                    if self._handle(conn, ctx, msg):
                        with contextlib.suppress(ConnectionError):
                            await writer.drain()
                        conn.close()
                        break
                await writer.drain()
        except FrameTooLarge as exc:
            log.warning("AMI client %s: %s", conn.label, exc)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # one broken client must not take the PBX down
            log.exception("AMI client %s: unexpected error", conn.label)
        finally:
            self._connections.discard(conn)
            if handler is not None:
                self._handlers.discard(handler)
            conn.close()

    def _handle(self, conn: _Connection, ctx: ActionContext, msg: Message) -> bool:
        """Log, answer and execute one action; True when the connection must close."""
        self.action_log.record(
            msg, time=self.clock.now(), connection=conn.label, username=conn.session.username
        )
        try:
            outcome = dispatch(ctx, msg)
            for reply in outcome.replies:
                ctx.send(reply)
            if outcome.effect is not None:
                outcome.effect()
        except Exception:  # a simulator bug must not cost the client its connection
            log.exception("AMI client %s: action %s failed", conn.label, msg.get("Action"))
            ctx.send(response(msg, "Error", "Internal simulator error"))
            return False
        if conn.session.wants("call") and not self._traffic_started:
            self.start_traffic()
        return outcome.close

    # ------------------------------------------------------------------ load

    async def _run_load(self, profile: LoadProfile) -> None:
        start = self.clock.now()
        count = 0
        for call in iter_load_calls(profile):
            delay = self.clock.to_real(start + call.at - self.clock.now())
            if delay > 0.002:
                await asyncio.sleep(delay)
            elif count % 100 == 0:
                await asyncio.sleep(0)  # behind schedule: catch up in bursts, still serve clients
            self.pbx.start_inbound(call.ani, call.did, call.ring_timeout)
            count += 1
        log.info("load finished: %d initiation calls offered", count)
