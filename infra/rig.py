"""What the demo, the benchmarks and the tests run on this machine, beside the local stack: ``callback``
subprocesses that can be SIGKILLed and restarted, the PBX simulator on a thread, a TCP proxy that can
cut an AMI connection mid-call, a tail that collects the records of some topics, free ports.

The demo (``callback demo``) and the benchmarks (``callback bench``) are product commands, so these
live in the product; helpers only tests use are under ``tests/``. Waiting is ``infra.process.wait_until``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from infra.process import wait_until

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def producer_args(
    pbx: str, host: str, port: int, *extra: str, username: str = "callback", secret: str = "callback"
) -> list[str]:
    """``callback producer`` for PBX ``pbx`` logging in at ``host:port`` (the simulator's user by
    default), then ``extra`` flags."""
    return ["producer", "--pbx", pbx, "--host", host, "--port", str(port),
            "--username", username, "--secret", secret, *extra]


class LoopThread:
    """An asyncio loop in a daemon thread, for synchronous tests driving async servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class SimulatorThread:
    """``infra.pbx_sim.server.PbxSimulator`` on a free port in a background loop; restartable on the
    same port (``restart``), which is what an Asterisk restart looks like to AMI clients."""

    def __init__(
        self,
        scenario: Any,
        *,
        speed: float = 1.0,
        port: int = 0,
        action_log: Path | None = None,
        username: str = "callback",
        secret: str = "callback",
    ) -> None:
        from infra.pbx_sim.server import PbxSimulator, SimulatorOptions

        self._factory = lambda p: PbxSimulator(
            scenario,
            SimulatorOptions(
                port=p, speed=speed, username=username, secret=secret, action_log_path=action_log
            ),
        )
        self.loops = LoopThread()
        self.sim = self._factory(port)
        self.loops.run(self.sim.start())
        self.host, self.port = self.sim.host, self.sim.port
        self.username, self.secret = username, secret
        #: action logs of every incarnation (a restart starts a new simulator)
        self.history: list[Any] = []

    def producer_args(self, pbx: str, *extra: str, via: TcpProxy | None = None) -> list[str]:
        """``callback producer`` for PBX ``pbx`` logging in to this simulator as its AMI user, or
        through ``via`` (a proxy in front of it, to cut the connection), then ``extra`` flags."""
        host, port = (via.host, via.port) if via is not None else (self.host, self.port)
        return producer_args(pbx, host, port, *extra, username=self.username, secret=self.secret)

    def actions(self, name: str, **headers: str) -> list[Any]:
        entries = [e for sim in [*self.history, self.sim] for e in sim.action_log.of(name, **headers)]
        return entries

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the simulator's loop (its state is not thread-safe)."""

        async def wrapper() -> T:
            return fn()

        return self.loops.run(wrapper())

    def stop(self) -> None:
        self.loops.run(self.sim.stop())
        self.history.append(self.sim)

    def start_again(self) -> None:
        self.sim = self._factory(self.port)
        self.loops.run(self.sim.start())

    def close(self) -> None:
        try:
            if self.sim._server is not None:
                self.loops.run(self.sim.stop())
        finally:
            self.loops.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` closes every open connection (a network blip)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.loops = LoopThread()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server = self.loops.run(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.host = "127.0.0.1"
        self.port = self._server.sockets[0].getsockname()[1]
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        async def close_all() -> None:
            for w in list(self._writers):
                w.transport.abort()

        self.loops.run(close_all())

    def close(self) -> None:
        self.cut()
        self._server.close()
        self.loops.close()


@dataclass
class KafkaTail:
    """Collects records of some topics produced after it was created (explicit end-offset assignment)."""

    topics: list[str]
    records: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        import json

        from confluent_kafka import Consumer, TopicPartition

        from callback.kafka_io import consumer_config

        self._json = json
        self._consumer = Consumer(consumer_config(f"test-tail-{uuid.uuid4().hex[:8]}"))
        assignment = []
        for topic in self.topics:
            meta = self._consumer.list_topics(topic, timeout=20).topics[topic]
            for p in meta.partitions:
                high = wait_until(
                    lambda tp=TopicPartition(topic, p): self._high(tp), 30, f"the end of {topic}[{p}]"
                )
                assignment.append(TopicPartition(topic, p, high - 1))
        self._consumer.assign(assignment)

    def _high(self, tp: Any) -> int | None:
        """High watermark + 1 (so 0 is falsy-safe), or None while the partition has no leader yet
        (a topic just created on a stack that just started)."""
        from confluent_kafka import KafkaException

        try:
            return self._consumer.get_watermark_offsets(tp, timeout=20)[1] + 1
        except KafkaException as exc:
            if exc.args[0].retriable() or "leader" in str(exc).lower():
                return None
            raise

    def poll(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            key = msg.key().decode() if msg.key() else None
            self.records.append((msg.topic(), key, self._json.loads(msg.value())))

    def wait_for(
        self,
        predicate: Callable[[tuple[str, str | None, dict[str, Any]]], bool],
        *,
        count: int = 1,
        timeout: float = 30.0,
        what: str = "records",
    ) -> list[tuple[str, str | None, dict[str, Any]]]:
        def ready() -> list[Any] | None:
            self.poll(0.2)
            found = [r for r in self.records if predicate(r)]
            return found if len(found) >= count else None

        return wait_until(ready, timeout, what)

    def close(self) -> None:
        self._consumer.close()


#: every CallbackProcess started by this interpreter: killed at exit if its owner could not stop it, so
#: a stray originator or worker never outlives its run (and never acts on the next run's records)
_RUNNING: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_RUNNING):
        if proc.poll() is None:
            proc.kill()


class CallbackProcess:
    """One ``callback <args>`` subprocess, its output appended to ``log_path``; ``start`` (again after
    ``kill``, as a supervisor would), ``kill`` (SIGKILL: a crash), ``stop`` (SIGTERM: a clean exit).

    Each runs in its own session, so a signal hits exactly that process. ``env`` is added to this
    process's environment. ``interpreter_args`` go before ``-m callback.cli`` (e.g. ``-m cProfile -o
    FILE``, for a profiled run)."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        *,
        interpreter_args: Sequence[str] = (),
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.env = env or {}
        self.interpreter_args = list(interpreter_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> CallbackProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"--- start {self.starts + 1}: callback {' '.join(self.args)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, *self.interpreter_args, "-m", "callback.cli", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        _RUNNING.add(self.proc)
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` is in the log; ``TimeoutError`` after ``timeout``, ``RuntimeError``
        (with the log's end) as soon as the process exits without having written it."""

        def found() -> bool:
            if not self.alive:
                raise RuntimeError(
                    f"callback {self.args[0]} exited with {self.returncode()}:\n{self.log_text()[-3000:]}"
                )
            return text in self.log_text()

        wait_until(
            found, timeout, f"{text!r} in the log of callback {' '.join(self.args[:2])}", interval=0.05
        )

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, no goodbye -- a crash."""
        if self.alive:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not exit in time); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


def ami_secret_env(server_id: str, secret: str = "callback") -> dict[str, str]:
    """The environment that gives ``callback producer`` / ``originator`` the AMI secret of one PBX
    (``ami.secrets.<server_id>`` of the settings), for ``CallbackProcess(..., env=...)``."""
    return {f"CALLBACK_AMI__SECRETS__{server_id.upper()}": secret}


#: the dialplan the simulator plays: short IVR messages, so tests stay quick
PBX = {
    "channelvars": ["CALLBACK_ID", "LEG", "ATTEMPT"],
    "playback_contexts": {"callback-busy-ivr": 0.5, "callback-failed-ivr": 0.5},
}


@dataclass
class RunNumbers:
    """Numbers unique to one run: ``ani(7)`` is a Nigerian mobile, ``dest(3)`` a Spanish one."""

    block: str = field(default_factory=lambda: f"{random.randrange(10**6):06d}")

    def ani(self, code: int) -> str:
        return f"2348{self.block}{code:02d}"

    def us(self, code: int) -> str:
        return f"1917{self.block}{code:02d}"

    def dest(self, code: int) -> str:
        return f"346{self.block}{code:02d}"

    def did(self, code: int) -> str:
        return f"99{self.block}{code:02d}"

    def pin(self, code: int) -> str:
        return f"{self.block}{code:02d}"

    def card(self, code: int) -> str:
        return f"88{self.block}{code:02d}"
