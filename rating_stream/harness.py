"""Run the rating stream's processes and observe their results: for the benchmark and the tests.

Processes are real ``callback rating`` / ``callback cdr-sink`` subprocesses (the same entry points
an operator runs), each in its own process group so a SIGKILL hits exactly that process and
nothing else on a shared machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from callback.topic_reader import read_latest, read_topics
from schemas.rating import BalanceUpdate


class Proc:
    """One ``callback <args>`` subprocess with its output in ``log``."""

    def __init__(self, args: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.log = log
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"--- start {self.starts + 1}: callback {' '.join(self.args)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "callback.cli", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env or dict(os.environ),
                start_new_session=True,
            )
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, no goodbye -- a crash."""
        if self.alive:
            assert self.popen is not None
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
            self.kills += 1

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not exit in time); returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def wait(self, timeout_s: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout_s)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def wait_for(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


def read_balances(topic: str = "accounts.balances") -> dict[str, BalanceUpdate]:
    """The latest committed balance of every payer on ``topic`` (what a billing consumer sees)."""
    return read_latest(topic, BalanceUpdate, purpose="balances-reader")


def run_topics(run: str) -> dict[str, str]:
    """Topics of their own for one test or bench run (legs, cdr, balances), like the catalogue's."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from callback.kafka_io import base_config

    names = {what: f"test.{run}.{what}" for what in ("legs", "cdr", "balances")}
    admin = AdminClient(base_config())  # kept referenced until the futures are done
    futures = admin.create_topics(
        [
            NewTopic(names["legs"], 3, 1),
            NewTopic(names["cdr"], 3, 1),
            NewTopic(names["balances"], 3, 1, config={"cleanup.policy": "compact"}),
        ]
    )
    for future in futures.values():
        future.result()
    return names


def committed_keys(topic: str) -> list[str]:
    """The key of every committed record of ``topic``, in order per partition."""
    keys: list[str] = []
    read_topics(f"keys-{topic}", [topic], lambda m: keys.append(m.key().decode()))
    return keys
