"""Every AMI action the simulator received, for tests to assert on the PBX's side of the story.

"This number was originated exactly once" cannot be checked from Kafka topics alone: a
duplicate Originate is exactly the bug to catch. The log keeps each action (name, headers
in order, virtual time, connection, user) in memory and optionally appends it as one JSON
object per line to a file, flushed per line so a crashed test still leaves evidence.
Secrets (``Secret``, ``Key``) are redacted.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from infra.pbx_sim.channels import InvalidChannel, parse_dial_target
from infra.pbx_sim.protocol import Header, Message

_REDACTED = {"secret", "key"}


@dataclass(frozen=True)
class LoggedAction:
    seq: int
    time: float
    connection: str
    username: str | None
    name: str
    headers: tuple[Header, ...]

    def get(self, key: str) -> str | None:
        return Message(self.headers).get(key)

    def get_all(self, key: str) -> list[str]:
        return Message(self.headers).get_all(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": round(self.time, 6),
            "connection": self.connection,
            "username": self.username,
            "action": self.name,
            "headers": [list(h) for h in self.headers],
        }


class ActionLog:
    def __init__(self, path: str | Path | None = None) -> None:
        self.entries: list[LoggedAction] = []
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._file = target.open("a", encoding="utf-8")

    def record(self, msg: Message, *, time: float, connection: str, username: str | None) -> LoggedAction:
        headers = tuple((k, "********" if k.lower() in _REDACTED else v) for k, v in msg.headers)
        with self._lock:
            entry = LoggedAction(
                len(self.entries) + 1, time, connection, username, msg.get("Action") or "", headers
            )
            self.entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry.to_json(), separators=(",", ":")) + "\n")
                self._file.flush()
        return entry

    def of(self, action: str, **headers: str) -> list[LoggedAction]:
        """Entries of one action (case-insensitive) whose headers equal the given values."""
        wanted = action.lower()
        return [
            e
            for e in self.entries
            if e.name.lower() == wanted and all(e.get(k) == v for k, v in headers.items())
        ]

    def count(self, action: str, **headers: str) -> int:
        return len(self.of(action, **headers))

    def originated_numbers(self) -> list[str]:
        """The number each Originate dialled (from its Channel), in arrival order."""
        numbers = []
        for entry in self.of("Originate"):
            try:
                numbers.append(parse_dial_target(entry.get("Channel") or "").number)
            except InvalidChannel:
                continue
        return numbers

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
