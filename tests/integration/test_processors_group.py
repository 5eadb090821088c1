"""Two processors workers in one group share the partitions: every callback completes, whichever
worker owns its session, and each attempt is originated once."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from infra.process import wait_until
from infra.rig import RunNumbers
from tests.callback_rig import CallbackRig
from tests.integration import test_processors_kill as kill

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(stack, tmp_path) -> Iterator[CallbackRig]:
    r = CallbackRig(tmp_path, kill.carrier, kill.SUBSCRIBERS, instance="group-a")
    yield r
    r.close()


#: a PIN of this module's own for the second rig: the first rig's device keeps kill.PIN on
#: config.devices, and two devices with one PIN make it ambiguous
OWN_PIN = RunNumbers().pin(1)


def _own_pin_carrier(tag: str, server: str) -> dict:
    data = kill.carrier(tag, server)
    for device in data["devices"]:
        if device.get("pin") == kill.PIN:
            device["pin"] = OWN_PIN
    return data


@pytest.fixture
def rig_own_pin(stack, tmp_path) -> Iterator[CallbackRig]:
    subscribers = {n: ({**s, "pin": OWN_PIN} if "pin" in s else s) for n, s in kill.SUBSCRIBERS.items()}
    r = CallbackRig(tmp_path, _own_pin_carrier, subscribers, instance="group-a")
    yield r
    r.close()


READY = re.compile(r"processors ready: partitions \[([^]]*)\]")


def _partitions(log: str) -> list[set[int]]:
    """The partitions a worker said it holds, after each rebalance."""
    return [set(map(int, re.findall(r"\d+", found))) for found in READY.findall(log)]


def test_two_workers_share_the_partitions_and_every_callback_completes(rig):
    second = rig.start_processors("group-b")
    second.wait_for_log("processors ready", timeout=90)

    def shared() -> tuple[set[int], set[int]] | None:
        first, other = _partitions(rig.processors.log_text()), _partitions(second.log_text())
        if first and other and first[-1] and other[-1] and not first[-1] & other[-1]:
            return first[-1], other[-1]
        return None

    mine, theirs = wait_until(shared, 60, "both workers to hold partitions of their own")
    assert mine | theirs == set(range(6))
    numbers = list(kill.CALLERS)[:12]
    callbacks = {number: rig.call(number, kill.N.did(1)) for number in numbers}
    for number, cb in callbacks.items():
        final = rig.outcome(cb, legs=kill.CALLERS[number] + 3, timeout=120)
        assert final["to_state"] == "completed", rig.diagnose(cb)
    assert {n: rig.originates_to(n) for n in numbers} == {n: kill.CALLERS[n] + 1 for n in numbers}


def test_a_worker_that_dies_hands_its_sessions_and_pending_retries_to_the_other(rig_own_pin):
    """Kill one of two workers (for good) while callbacks it owns wait for their retries: the other
    takes its partitions after the session timeout, restores the sessions from their changelog and
    fires each pending retry once."""
    rig = rig_own_pin
    second = rig.start_processors("group-b")
    second.wait_for_log("processors ready", timeout=90)
    wait_until(lambda: all(p and p[-1] for p in (_partitions(rig.processors.log_text()),
                                                   _partitions(second.log_text()))),
               60, "both workers to hold partitions")
    numbers = list(kill.CALLERS)
    callbacks = {}
    for number in numbers:
        callbacks[number] = rig.call(number, kill.N.did(1))
        time.sleep(0.2)
    time.sleep(1.0)  # first attempts are busy by now: their retries are pending on both workers
    second.kill()
    took_over = wait_until(
        lambda: (_partitions(rig.processors.log_text()) or [set()])[-1] == set(range(6)),
        60,
        "the surviving worker to hold every partition",
    )
    assert took_over
    for number, cb in callbacks.items():
        final = rig.outcome(cb, legs=kill.CALLERS[number] + 3, timeout=120)
        assert final["to_state"] == "completed", rig.diagnose(cb)
    assert {n: rig.originates_to(n) for n in numbers} == {n: kill.CALLERS[n] + 1 for n in numbers}
