"""A watchdog that says where a stage's loop is stuck.

A long-running stage comes round its loop many times a second, and every wait inside it is bounded
(docs/architecture.md, "Guarantees, and how each is kept"). If it has not come round for ``after_s`` anyway,
something blocked that should not have: ``StallWatch`` then logs, once and again every
``repeat_s`` while it lasts, the Python stack of the loop's thread (and of the process's other
Python threads), so that the log of a wedged process names the call it is in, and says so again
when it comes round. It only reads: it never interrupts the loop.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)


class StallWatch:
    """``beat()`` from the watched thread each time round; a daemon thread reports a stall."""

    def __init__(self, name: str, after_s: float = 120.0, repeat_s: float = 300.0) -> None:
        self.name = name
        self.after_s = after_s
        self.repeat_s = repeat_s
        self._thread_id = threading.get_ident()
        self._last = time.monotonic()
        self._reported_at: float | None = None
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"stall-watch {name}", daemon=True)

    def start(self) -> StallWatch:
        """Watch the calling thread from now on."""
        self._thread_id = threading.get_ident()
        self._last = time.monotonic()
        self._watcher.start()
        return self

    def beat(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        tick = min(max(self.after_s / 4, 0.05), 5.0)
        while not self._stop.wait(tick):
            now = time.monotonic()
            stalled_s = now - self._last
            if stalled_s < self.after_s:
                if self._reported_at is not None:
                    log.warning("%s came round its loop again", self.name)
                    self._reported_at = None
                continue
            if self._reported_at is None or now - self._reported_at >= self.repeat_s:
                self._reported_at = now
                log.warning("%s has not come round its loop for %.0f s; where its threads are:\n%s",
                            self.name, stalled_s, self.stacks())

    def stacks(self) -> str:
        """The Python stack of the watched thread first, then of every other thread but this one."""
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        order = [self._thread_id] + [i for i in frames if i != self._thread_id]
        parts = []
        for ident in order:
            frame = frames.get(ident)
            if frame is None or ident == threading.get_ident():
                continue
            mark = " (the loop)" if ident == self._thread_id else ""
            parts.append(f"--- thread {names.get(ident, ident)}{mark}\n"
                         + "".join(traceback.format_stack(frame)))
        return "".join(parts)
