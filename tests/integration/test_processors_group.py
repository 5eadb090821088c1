"""Two processors workers in one group share the partitions: every callback completes, whichever
worker owns its session, and each attempt is originated once."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from infra.process import wait_until
from tests.callback_rig import CallbackRig
from tests.integration import test_processors_kill as kill

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(stack, tmp_path) -> Iterator[CallbackRig]:
    r = CallbackRig(tmp_path, kill.carrier, kill.SUBSCRIBERS, instance="group-a")
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
