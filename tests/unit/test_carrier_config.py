"""Carrier configuration files: the sample is valid; broken copies are refused with the right line."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.carrier_config import ConfigError, load_carrier_config
from schemas.hangup_causes import BY_Q850
from schemas.reference import AuthMethod

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "carrier.yaml"


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = SAMPLE.read_text()
    assert old in text, f"sample no longer contains {old!r}"
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_sample_carrier_is_valid_and_complete():
    config = load_carrier_config(SAMPLE)
    rates = {
        r.prefix: r.rate_per_minute for t in config.tariffs if t.tariff_id == "retail-usd" for r in t.rates
    }
    assert str(rates["234"]) == "0.20" and str(rates["34"]) == "0.08"  # the seed's example
    assert config.callback_user.user_id == "cb-owner"
    methods = {p.dialplan_id: p.auth_method for p in config.dialplans}
    did_plans = [methods[d.dialplan_id] for d in config.dids]
    assert len(set(did_plans)) >= 2, "two access numbers with different auth methods"
    causes = {
        p.hangup_cause for p in config.dialplans if p.dialplan_id in {d.dialplan_id for d in config.dids}
    }
    assert len(causes) >= 2 and causes <= set(BY_Q850)
    assert AuthMethod.ANI in did_plans
    assert any(d.pin for d in config.devices) and config.cards
    topics = {topic for topic, _, _ in config.records()}
    assert all(t.startswith("config.") for t in topics) and len(topics) == 8


def test_bad_field_is_reported_with_its_line(tmp_path):
    path = _broken(tmp_path, 'rate_per_minute: "0.08"', 'rate_per_minute: "eight cents"')
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    assert problem.path.endswith("rate_per_minute")
    assert problem.line == _line_of(path, "eight cents")
    assert f"broken.yaml:{problem.line}:" in str(info.value)


def test_dangling_reference_is_reported_with_its_line(tmp_path):
    path = _broken(tmp_path, "dialplan_id: cb-ani\n    pbx_id", "dialplan_id: cb-nowhere\n    pbx_id")
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    assert problem.path == "dids.1.dialplan_id" and "cb-nowhere" in problem.message
    assert problem.line == _line_of(path, "cb-nowhere")


def test_unsupported_hangup_cause_refused(tmp_path):
    path = _broken(tmp_path, "hangup_cause: 17", "hangup_cause: 16")
    with pytest.raises(ConfigError, match="hangup_cause"):
        load_carrier_config(path)


def test_yaml_syntax_error_has_a_line(tmp_path):
    path = tmp_path / "syntax.yaml"
    path.write_text("callback_settings:\n  scope: system\n  max_retries: [3\n")
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    assert info.value.problems[0].line is not None


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_carrier_config(tmp_path / "nope.yaml")
