"""The demo's plan: deterministic, in the planned mix, a valid carrier, expectations that follow the
seed's rules (who pays, retries), and numbers unique to the run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from callback.reference import ReferenceData
from infra.demo.scenario import CALLBACK_USER, DEMO_TIMERS, MIX, Kind, plan
from processors.initiation import decide_initiation
from schemas.callback import CallbackInitiation, InitiationOrigin
from schemas.carrier_config import CarrierConfig, load_carrier_config

SAMPLE = load_carrier_config(Path(__file__).resolve().parents[2] / "examples" / "carrier.yaml")


def _plan(n: int = 300, seed: int = 7, tag: str = "123456"):
    return plan(SAMPLE, callbacks=n, seed=seed, over_s=60.0, tag=tag)


def test_the_same_seed_plays_the_same_plan_and_another_seed_another():
    assert _plan().callbacks == _plan().callbacks
    assert [c.kind for c in _plan(seed=8).callbacks] != [c.kind for c in _plan().callbacks]


def test_the_mix_follows_the_weights_and_every_kind_is_played():
    counts = Counter(c.kind for c in _plan().callbacks)
    assert sum(counts.values()) == 300
    total = sum(MIX.values())
    for kind, weight in MIX.items():
        assert abs(counts[kind] - 300 * weight / total) <= 1, kind


def test_callbacks_are_spread_over_the_requested_time_and_numbers_are_unique():
    demo = _plan()
    times = [c.at_s for c in demo.callbacks]
    assert times == sorted(times) and 55 <= max(times) <= 60
    numbers = [c.number for c in demo.callbacks if c.number is not None]
    assert len(numbers) == len(set(numbers))
    other_run = {c.number for c in _plan(tag="654321").callbacks if c.number}
    assert not set(numbers) & other_run


def test_the_demo_carrier_is_valid_and_shortens_only_the_timers():
    demo = _plan()
    data = dict(demo.carrier)
    data["servers"] = [s.model_dump(mode="json") for s in SAMPLE.servers]
    config = CarrierConfig.model_validate(data)  # unique PINs, numbers, references
    settings = config.callback_settings
    assert (settings.retry_time_s, settings.wait_time_s, settings.initiation_ring_s) == (
        DEMO_TIMERS["retry_time_s"], DEMO_TIMERS["wait_time_s"], DEMO_TIMERS["initiation_ring_s"],
    )
    assert settings.callback_user_id == SAMPLE.callback_settings.callback_user_id == CALLBACK_USER
    assert {u.user_id for u in SAMPLE.users} <= {u.user_id for u in config.users}


def test_expectations_follow_the_initiation_rules_of_the_processors():
    """Each planned DID call, decided by the processors' own initiation rules on the demo carrier,
    is accepted or refused as the plan expects, and the payer of its initiation leg matches."""
    demo = _plan()
    data = dict(demo.carrier)
    data["servers"] = [s.model_dump(mode="json") for s in SAMPLE.servers]
    ref = ReferenceData.from_carrier_config(CarrierConfig.model_validate(data))
    from datetime import UTC, datetime

    for call in demo.callbacks:
        if call.did is None:
            continue
        decision = decide_initiation(
            CallbackInitiation(source="t", callback_id=f"cb{call.index}", origin=InitiationOrigin.DID,
                               ani=call.number, did=call.did, channel="c", received_at=datetime.now(UTC)),
            ref,
        )
        refused = call.expected.state == "rejected"
        assert decision.accepted is not refused, (call.kind, decision.reason)
        if refused:
            assert decision.reason == call.expected.reason
        payer = decision.initiation_payer(InitiationOrigin.DID)
        assert f"{payer.kind.value}:{payer.id}" == call.expected.payers["initiation:0"], call.kind


def test_retries_and_payers_of_unanswered_attempts():
    for call in _plan().callbacks:
        exp = call.expected
        if call.kind is Kind.A_RETRY:
            answered_on = exp.originates
            assert exp.payers[f"a:{answered_on}"].startswith("user:")
            owner = f"callback_user:{CALLBACK_USER}"
            assert all(exp.payers[f"a:{n}"] == owner for n in range(1, answered_on))
        if call.kind is Kind.A_NO_ANSWER:
            assert exp.originates == 1 + DEMO_TIMERS["max_retries"] and exp.state == "failed_a"
        if call.kind is Kind.WEB:
            assert "initiation:0" not in exp.payers and call.did is None and call.api_key
