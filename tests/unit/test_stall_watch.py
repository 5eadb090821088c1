"""StallWatch: a loop that stops coming round is reported with the call it is stuck in."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from callback.stall_watch import StallWatch
from infra.process import wait_until


def _wedged_in_a_call_without_timeout(release: threading.Event) -> None:
    release.wait(10)


def _reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "callback.stall_watch"]


def test_a_stalled_loop_is_reported_with_its_stack_and_its_recovery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="callback.stall_watch")
    release = threading.Event()
    started = threading.Event()
    watches: list[StallWatch] = []

    def loop() -> None:
        watch = StallWatch("the test loop", after_s=0.3, repeat_s=60).start()
        watches.append(watch)
        started.set()
        _wedged_in_a_call_without_timeout(release)
        watch.beat()
        time.sleep(1.0)

    worker = threading.Thread(target=loop, name="looper")
    worker.start()
    started.wait(5)
    try:
        assert wait_until(lambda: len(_reports(caplog)) >= 1, 5, interval=0.02)
        [report] = _reports(caplog)
        assert report.startswith("the test loop has not come round its loop for")
        loop_part = report.split("--- thread looper (the loop)\n")[1].split("--- thread")[0]
        assert "_wedged_in_a_call_without_timeout" in loop_part
        time.sleep(0.5)
        assert len(_reports(caplog)) == 1, "reported once per repeat_s, not every tick"
    finally:
        release.set()
    assert wait_until(lambda: any("came round its loop again" in m for m in _reports(caplog)), 5,
                      interval=0.02)
    worker.join(5)
    watches[0].stop()


def test_a_loop_that_keeps_beating_is_never_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="callback.stall_watch")
    watch = StallWatch("the busy loop", after_s=0.3).start()
    try:
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            watch.beat()
            time.sleep(0.05)
    finally:
        watch.stop()
    assert _reports(caplog) == []
