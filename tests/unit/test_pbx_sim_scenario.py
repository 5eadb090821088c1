"""Scenario files of the PBX simulator: defaults, number lookup, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.pbx_sim.load import iter_load_calls
from infra.pbx_sim.scenario import LoadProfile, ScenarioError, load_scenario, parse_scenario

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pbx-scenario.yaml"


def test_unknown_numbers_answer_after_one_second_and_talk_five() -> None:
    sub = parse_scenario({}).subscriber("4915112345678")
    assert (sub.outcome, sub.answer_after, sub.talk_seconds) == ("answer", 1.0, 5.0)


def test_numbers_match_however_they_are_written() -> None:
    scenario = parse_scenario({"subscribers": {"+370 600 00001": {"outcome": "busy"}, 37060000002: {}}})
    assert scenario.subscriber("0037060000001").outcome == "busy"
    assert scenario.subscriber("37060000001").outcome == "busy"
    assert "37060000002" in scenario.subscribers  # unquoted YAML numbers become strings


def test_the_same_number_twice_is_refused() -> None:
    with pytest.raises(ScenarioError, match="same number"):
        parse_scenario({"subscribers": {"+37060000001": {}, "0037060000001": {}}})


def test_errors_name_the_field_path() -> None:
    data = {
        "subscribers": {"37060000001": {"answer_after": -1, "outcom": "busy", "pin": "12a"}},
        "inbound": [{"at": 1}],
        "pbx": {"channelvars": ["CALLBACK ID"]},
    }
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "my.yaml")
    text = str(err.value)
    assert text.startswith("my.yaml:")
    assert "subscribers.37060000001.answer_after: Input should be greater than or equal to 0" in text
    assert "subscribers.37060000001.outcom: Extra inputs are not permitted" in text
    assert "subscribers.37060000001.pin: Value error, '12a' is not DTMF digits" in text
    assert "inbound[0].did: Field required" in text
    assert "pbx.channelvars: Value error, 'CALLBACK ID' is not a channel variable name" in text


def test_unknown_outcome_lists_the_allowed_ones() -> None:
    with pytest.raises(ScenarioError, match=r"subscribers\.1\.outcome: Input should be 'answer', 'busy'"):
        parse_scenario({"subscribers": {"1": {"outcome": "sleeps"}}})


def test_a_context_cannot_have_two_roles() -> None:
    with pytest.raises(
        ScenarioError, match="context 'callback-pin' is in both input_contexts and dial_context"
    ):
        parse_scenario({"pbx": {"dial_context": "callback-pin"}})


def test_repeated_prompts_take_the_next_digits_and_keep_the_last() -> None:
    sub = parse_scenario({"subscribers": {"1": {"pin": ["0000", "1234"], "destination": None}}}).subscriber(
        "1"
    )
    assert [sub.digits_for("pin", n) for n in range(3)] == ["0000", "1234", "1234"]
    assert sub.digits_for("destination", 0) is None
    assert sub.digits_for("card_number", 0) is None


def test_the_example_file_is_valid() -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.subscriber("37060000002").pin == ("0000", "4321")
    assert scenario.inbound[2].ani is None
    assert scenario.pbx.dial_context == "callback-dial-b"


def test_file_problems_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="No such file"):
        load_scenario(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("subscribers: [unclosed\n")
    with pytest.raises(ScenarioError, match="invalid YAML"):
        load_scenario(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="top level must be a mapping"):
        load_scenario(listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_scenario(empty).subscribers == {}


def test_load_mode_spreads_calls_evenly_and_is_reproducible() -> None:
    profile = LoadProfile(rate=4, did="37052000100", seconds=2.5, ani_pool=("1", "2", "3"), seed=7)
    calls = list(iter_load_calls(profile))
    assert len(calls) == 10
    assert [c.at for c in calls[:3]] == [0.0, 0.25, 0.5]
    assert {c.ani for c in calls} <= {"1", "2", "3"}
    assert {c.did for c in calls} == {"37052000100"}
    assert [c.ani for c in iter_load_calls(profile)] == [c.ani for c in calls]


def test_load_mode_invents_callers_when_no_pool_is_given() -> None:
    calls = list(iter_load_calls(LoadProfile(rate=100, did="1", seconds=1, seed=1)))
    assert len({c.ani for c in calls}) > 50
    assert all(c.ani and c.ani.isdigit() for c in calls)
