"""The originator's append-only journal of command ids: "a phone must not ring twice".

Kafka delivers ``pbx.commands`` at least once; ringing a phone must happen at most once. So the
originator writes a command's id here, and fsyncs, BEFORE it sends the AMI action; every id in the
journal is never executed again, whatever Kafka redelivers, across restarts.

One JSON object per line: ``{"id", "state", "t", ...}``. States: ``intent`` (about to send),
then one final state: ``sent`` (PBX accepted), ``refused`` (PBX said Error), ``unknown`` (no answer:
it may have run), ``not_sent`` (we decided not to send), ``reported`` (an ``intent`` found at start
was reported as outcome-unknown). Only the id matters for dedup; the rest is for the operator.

Crash windows, and why each is safe:

* before the ``intent`` line is on disk: nothing was sent; Kafka redelivers; it runs once.
* after ``intent``, before the AMI send: the id is journalled, so it is never sent. At the next start
  the dangling ``intent`` is reported as ``command.failed`` with ``outcome_unknown`` (we cannot know
  whether the bytes left), and the processors schedule a new attempt (a new command id) if they wish.
  A reported failure instead of a possible double ring: that is the at-most-once trade.
* after the send: same, plus the PBX's own events (``originate.result`` via the AMI producer) tell the
  truth about what happened.

A torn last line (crash while writing it) is ignored: its fsync never completed, so it was never
followed by a send. Start-up compaction drops entries older than ``keep_s`` (longer than the topic's
retention, after which Kafka cannot redeliver them), so the file does not grow forever.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FINAL_STATES = frozenset({"sent", "refused", "unknown", "not_sent", "reported"})
#: 8 days: one more than the 7-day retention of pbx.commands
DEFAULT_KEEP_S = 8 * 24 * 3600


@dataclass(frozen=True)
class Entry:
    id: str
    state: str
    t: float
    info: dict[str, Any]


class Journal:
    def __init__(self, path: Path, *, keep_s: float = DEFAULT_KEEP_S, now: float | None = None) -> None:
        self.path = path
        self._last: dict[str, Entry] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._compact(now if now is not None else time.time(), keep_s)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the process lifetime

    # --- reading -----------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    raw = json.loads(line)
                    entry = Entry(str(raw.pop("id")), str(raw.pop("state")), float(raw.pop("t")), raw)
                except (ValueError, KeyError, TypeError):
                    log.warning("journal %s line %d unreadable (torn write?), ignored", self.path, n)
                    continue
                self._last[entry.id] = entry

    def _compact(self, now: float, keep_s: float) -> None:
        kept = {k: e for k, e in self._last.items() if now - e.t <= keep_s}
        if len(kept) == len(self._last) and self.path.exists():
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for entry in kept.values():
                fh.write(_line(entry))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        dropped = len(self._last) - len(kept)
        if dropped:
            log.info("journal %s: compacted, %d old entries dropped, %d kept", self.path, dropped, len(kept))
        self._last = kept

    def __contains__(self, command_id: str) -> bool:
        return command_id in self._last

    def __len__(self) -> int:
        return len(self._last)

    def state(self, command_id: str) -> str | None:
        entry = self._last.get(command_id)
        return entry.state if entry else None

    def dangling(self) -> list[Entry]:
        """Commands whose intent was written but whose outcome never was (a crash in between)."""
        return [e for e in self._last.values() if e.state == "intent"]

    # --- writing -----------------------------------------------------------------------------------

    def record(self, command_id: str, state: str, **info: Any) -> None:
        """Append and fsync: when this returns the entry survives a crash or power loss."""
        entry = Entry(command_id, state, time.time(), info)
        self._fh.write(_line(entry))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._last[command_id] = entry

    def close(self) -> None:
        self._fh.close()


def _line(entry: Entry) -> str:
    return (
        json.dumps(
            {"id": entry.id, "state": entry.state, "t": round(entry.t, 3), **entry.info},
            separators=(",", ":"),
        )
        + "\n"
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
