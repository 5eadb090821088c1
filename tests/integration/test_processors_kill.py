"""SIGKILL the processors worker in the middle of callbacks with pending retries, twice: every session
still reaches its outcome, every retry fires once, and the PBX (the simulator's own log of the AMI
actions it received) sees each leg-A attempt originated exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.rig import RunNumbers
from schemas.callback import LegType, leg_id_for
from tests.callback_rig import CallbackRig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = RunNumbers()
PIN, DEST = N.pin(1), N.dest(1)
ANSWERS = {"answer_after": 0.3, "input_delay": 0.2, "talk_seconds": 1.0, "fail_after": 0.2}
#: caller -> how many times leg A is busy before it answers
CALLERS = {N.ani(i): (1 if i % 3 else 2) for i in range(1, 19)}
SUBSCRIBERS: dict[str, dict[str, Any]] = {
    number: {**ANSWERS, "outcomes": ["busy"] * busy + ["answer"], "pin": PIN, "destination": DEST}
    for number, busy in CALLERS.items()
}
SUBSCRIBERS[DEST] = {**ANSWERS, "talk_seconds": 1.5}


def carrier(tag: str, server: str) -> dict[str, Any]:
    settings = {
        "callback_server_id": server,
        "callback_user_id": f"owner-{tag}",
        "callback_device_id": f"owner-dev-{tag}",
        "wait_time_s": 5,
        "retry_time_s": 3,
        "max_retries": 3,
        "initiation_ring_s": 0,
        "pin_attempts": 3,
        "active_for_users": True,
        "max_initiations_per_ani_per_minute": 0,
        "one_live_session_per_ani": False,
    }
    return {
        "callback_settings": {"scope": "system", "send_device_cid": False, "send_source_as_cid": False,
                              **settings},
        "tariffs": [
            {"tariff_id": f"origins-{tag}", "rates": [{"prefix": "234", "rate_per_minute": "0.20"}]},
            {"tariff_id": f"retail-{tag}", "rates": [
                {"prefix": "234", "rate_per_minute": "0.20"}, {"prefix": "34", "rate_per_minute": "0.08"}]},
        ],
        "users": [
            {"user_id": f"owner-{tag}", "name": "owner", "tariff_id": f"origins-{tag}", "prepaid": False,
             "credit_limit": "1000000"},
            {"user_id": f"ana-{tag}", "name": "ana", "tariff_id": f"retail-{tag}", "balance": "500"},
        ],
        "devices": [
            {"device_id": f"owner-dev-{tag}", "user_id": f"owner-{tag}"},
            {"device_id": f"ana-dev-{tag}", "user_id": f"ana-{tag}", "pin": PIN},
        ],
        "dialplans": [{"dialplan_id": f"pin-{tag}", "auth_method": "device_pin", "hangup_cause": 17,
                       "settings": {"scope": f"dialplan:pin-{tag}", **settings}}],
        "dids": [{"number": N.did(1), "dialplan_id": f"pin-{tag}", "pbx_id": server}],
    }


@pytest.fixture
def rig(stack, tmp_path) -> Iterator[CallbackRig]:
    r = CallbackRig(tmp_path, carrier, SUBSCRIBERS)
    yield r
    r.close()


def test_sigkill_during_pending_retries_loses_nothing_and_rings_nobody_twice(rig):
    callbacks: dict[str, str] = {}
    numbers = list(CALLERS)
    kills = {6: 0.0, 13: 0.0}  # kill after the 6th and the 13th call
    for i, number in enumerate(numbers, 1):
        callbacks[number] = rig.call(number, N.did(1))
        time.sleep(0.3)
        if i in kills:
            time.sleep(1.0)  # some first attempts are busy by now: their retries are pending
            rig.kill_processors()
            down = time.monotonic()
            rig.start_processors()
            rig.wait_processors_ready(timeout=60)
            kills[i] = time.monotonic() - down
    for number, cb in callbacks.items():
        attempts = CALLERS[number] + 1
        final = rig.outcome(cb, legs=attempts + 2, timeout=120)  # initiation, each A attempt, B
        assert final["to_state"] == "completed", rig.diagnose(cb)
        legs = rig.legs(cb)
        assert set(legs) == {leg_id_for(cb, LegType.INITIATION, 0), leg_id_for(cb, LegType.B, 1)} | {
            leg_id_for(cb, LegType.A, n) for n in range(1, attempts + 1)
        }
        assert [legs[leg_id_for(cb, LegType.A, n)]["disposition"] for n in range(1, attempts + 1)] == [
            "BUSY"
        ] * CALLERS[number] + ["ANSWERED"]
    # the PBX's side of the story: each attempt of each caller originated exactly once
    assert {number: rig.originates_to(number) for number in numbers} == {
        number: busy + 1 for number, busy in CALLERS.items()
    }
    assert rig.originates_to(DEST) == 0  # leg B is dialled by Redirect, never originated
    dials = [e for e in rig.pbx_actions("Redirect") if e.get("Context") == "callback-dial-b"]
    assert len(dials) == len(numbers)
    assert all(seconds < 60 for seconds in kills.values()), kills
