"""Helpers for tests of the AMI side against real servers (no mocks): the PBX simulator in a thread,
a cuttable TCP proxy (to drop an AMI connection mid-call without stopping the PBX), a Kafka tail that
collects records, and ``callback`` subprocesses that can be SIGKILLed.

Kept in the package (like ``panoramisk.testing``) so integration and end-to-end suites share them.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


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


#: every CliProcess started by this interpreter: killed at exit if a test could not stop it, so a
#: stray originator or worker never outlives its test run (and never acts on the next run's records)
_RUNNING: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_RUNNING):
        if proc.poll() is None:
            proc.kill()


class CliProcess:
    """A ``callback ...`` subprocess with its output in a log file; ``kill()`` is SIGKILL."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        cmd = [str(Path(sys.executable).parent / "callback"), *args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        _RUNNING.add(self.proc)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        def found() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.args[0]} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            return text in self.log_text()

        wait_until(found, timeout, f"{text!r} in the log of {' '.join(self.args[:2])}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode


class AmiClient:
    """A real panoramisk client on its own loop thread, for a test to act as 'another AMI user'."""

    def __init__(self, host: str, port: int, username: str = "callback", secret: str = "callback") -> None:
        from panoramisk import Manager

        self.loops = LoopThread()

        async def connect() -> Any:
            manager = Manager(
                loop=asyncio.get_running_loop(),
                host=host,
                port=port,
                username=username,
                secret=secret,
                events="off",
                ping_delay=60,
            )
            manager.connect()
            for _ in range(200):
                if manager.authenticated:
                    return manager
                await asyncio.sleep(0.05)
            raise AssertionError("test AMI client could not log in")

        self.manager = self.loops.run(connect())

    def send(self, action: dict[str, Any]) -> dict[str, Any]:
        async def send() -> Any:
            return await asyncio.wait_for(self.manager.send_action(action, as_list=False), 10)

        reply = self.loops.run(send())
        return dict(reply.items())

    def close(self) -> None:
        self.manager.close()
        self.loops.close()


def ami_secret_env(server_id: str, secret: str = "callback") -> dict[str, str]:
    """The environment that gives ``callback producer`` / ``originator`` the AMI secret of one PBX
    (``ami.secrets.<server_id>`` of the settings), for ``CliProcess(..., env=...)``."""
    return {f"CALLBACK_AMI__SECRETS__{server_id.upper()}": secret}


def carrier_config_for(
    path: Path,
    servers: dict[str, tuple[str, int]],
    secret: str = "callback",
    base: Path | None = None,
    *,
    secret_in_file: bool = True,
) -> Path:
    """The example carrier YAML with its servers pointed at test PBXes: {server_id: (host, port)}.

    ``secret_in_file`` writes each server's ``ami_secret`` into the file, the deprecated way a
    ``--config`` process still accepts; without it the processes need ``ami_secret_env``."""
    import yaml

    data = yaml.safe_load((base or REPO_ROOT / "examples" / "carrier.yaml").read_text())
    kept = []
    for server in data["servers"]:
        server.pop("ami_secret", None)
        if server["server_id"] in servers:
            server["ami_host"], server["ami_port"] = servers[server["server_id"]]
            server["ami_username"] = "callback"
            kept.append(server)
    for server_id, (host, port) in servers.items():
        if server_id not in {s["server_id"] for s in kept}:
            kept.append(
                {"server_id": server_id, "ami_host": host, "ami_port": port, "ami_username": "callback"}
            )
    if secret_in_file:
        for server in kept:
            server["ami_secret"] = secret
    data["servers"] = kept
    ids = {s["server_id"] for s in kept}
    data["callback_settings"]["callback_server_id"] = kept[0]["server_id"]
    for did in data["dids"]:
        if did.get("pbx_id") not in ids:
            did["pbx_id"] = kept[0]["server_id"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
