"""Carrier configuration files: the sample is valid; broken copies are refused with the right line."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.carrier_config import CarrierConfig, ConfigError, load_carrier_config
from schemas.hangup_causes import BY_Q850
from schemas.reference import AuthMethod, CallbackServer
from schemas.topics import AUTH_WEB_CREDENTIALS, CONFIG_TOPICS
from tests.factories import SAMPLE_CARRIER, broken_carrier, line_of

SAMPLE = SAMPLE_CARRIER






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
    assert topics == {t.name for t in CONFIG_TOPICS} | {AUTH_WEB_CREDENTIALS.name}


def test_bad_field_is_reported_with_its_line(tmp_path):
    path = broken_carrier(tmp_path, 'rate_per_minute: "0.08"', 'rate_per_minute: "eight cents"')
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    assert problem.path.endswith("rate_per_minute")
    assert problem.line == line_of(path, "eight cents")
    assert f"broken.yaml:{problem.line}:" in str(info.value)


def test_dangling_reference_is_reported_with_its_line(tmp_path):
    path = broken_carrier(tmp_path, "dialplan_id: cb-ani\n    pbx_id", "dialplan_id: cb-nowhere\n    pbx_id")
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    assert problem.path == "dids.1.dialplan_id" and "cb-nowhere" in problem.message
    assert problem.line == line_of(path, "cb-nowhere")


def test_unsupported_hangup_cause_refused(tmp_path):
    path = broken_carrier(tmp_path, "hangup_cause: 17", "hangup_cause: 16")
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


def _edited(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """The sample with each (old, new) replaced once: several edits for one broken file."""
    text = SAMPLE.read_text()
    for old, new in edits:
        assert old in text, f"sample no longer contains {old!r}"
        text = text.replace(old, new, 1)
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    return path


def _line_after(path: Path, anchor: str, needle: str) -> int:
    """Line of the first ``needle`` at or after the line holding ``anchor``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if anchor in line)
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1


def _only_problem(path: Path):
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    return problem


def test_two_devices_with_one_pin_are_refused_at_the_second(tmp_path):
    path = broken_carrier(tmp_path, 'pin: "7315"', 'pin: "4821"')  # bob-home takes alice-mobile's PIN
    problem = _only_problem(path)
    assert problem.path == "devices.2.pin"
    assert problem.message == "PIN already used by device 'alice-mobile'"
    assert problem.line == _line_after(path, "device_id: bob-home", 'pin: "4821"')


def test_two_devices_registering_one_number_are_refused(tmp_path):
    path = broken_carrier(tmp_path, '["12125550142", "12125550143"]', '["12125550142", "2348031234567"]')
    problem = _only_problem(path)
    assert problem.path == "devices.2.registered_numbers.1"
    assert problem.message == "number 2348031234567 already registered to device 'alice-mobile'"
    assert problem.line == line_of(path, '"12125550142", "2348031234567"')


def test_one_device_listing_a_number_twice_is_not_ambiguous(tmp_path):
    path = broken_carrier(tmp_path, '["12125550142", "12125550143"]', '["12125550142", "12125550142"]')
    assert load_carrier_config(path).devices[2].registered_numbers == ["12125550142"] * 2


def test_two_cards_with_one_pinless_number_are_refused(tmp_path):
    path = broken_carrier(
        tmp_path,
        'pin: "2222", tariff_id: cards-usd, balance: "0.50"}',
        'pin: "2222", tariff_id: cards-usd, balance: "0.50", pinless_numbers: ["2348059998888"]}',
    )
    problem = _only_problem(path)
    assert problem.path == "cards.2.pinless_numbers.0"
    assert problem.message == "number 2348059998888 already a pinless number of card '8800100201'"
    assert problem.line == line_of(path, 'number: "8800100202"')


def test_shared_card_pins_are_refused_only_where_a_dial_plan_uses_the_pin_alone(tmp_path):
    shared_pin = ('{number: "8800100201", pin: "2222"', '{number: "8800100201", pin: "1111"')
    assert load_carrier_config(_edited(tmp_path, shared_pin)).cards[1].pin == "1111"  # number + PIN

    path = _edited(tmp_path, shared_pin, ("auth_method: card_number_pin", "auth_method: card_pin"))
    problem = _only_problem(path)
    assert problem.path == "cards.1.pin"
    assert problem.message == (
        "PIN already used by card '8800100200' (dial plan 'cb-card' uses card PIN alone)"
    )
    assert problem.line == line_of(path, '{number: "8800100201", pin: "1111"')


def test_every_ambiguity_of_a_file_is_reported_at_once(tmp_path):
    path = _edited(tmp_path, ('pin: "7315"', 'pin: "4821"'), ('pin: "90210"', 'pin: "4821"'))
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("devices.2.pin", "PIN already used by device 'alice-mobile'"),
        ("devices.3.pin", "PIN already used by device 'alice-mobile'"),
    ]
    assert info.value.problems[1].line == _line_after(path, "device_id: chidi-office", 'pin: "4821"')


# --- files YAML alone would misread ----------------------------------------------------------------


def test_a_key_written_twice_is_refused_at_the_second(tmp_path):
    """YAML keeps the last of two equal keys silently: the file says two things, one is ignored."""
    path = broken_carrier(tmp_path, "  max_retries: 3 ", "  max_retries: 3\n  max_retries: 9 ")
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    assert problem.path == "callback_settings.max_retries"
    assert problem.line == line_of(path, "max_retries: 9")
    assert f"first at line {line_of(path, 'max_retries: 3')}" in problem.message


def test_a_key_repeated_inside_a_list_item_is_located(tmp_path):
    path = broken_carrier(tmp_path, "    ami_port: 5039\n", "    ami_port: 5039\n    ami_port: 5040\n")
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("servers.1.ami_port", line_of(path, "ami_port: 5040"))


def test_a_file_that_is_not_utf8_is_refused_with_the_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    text = SAMPLE.read_text().replace("name: Asterisk 18, Lagos POP", "name: Asterisk 18, Lagos POP caf\xe9")
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    (problem,) = info.value.problems
    assert problem.line == line_of(SAMPLE, "name: Asterisk 18, Lagos POP")
    assert "not UTF-8" in problem.message and "0xe9" in problem.message
    assert "\n" not in info.value.summary()


def test_summary_is_one_line_with_every_problem(tmp_path):
    path = broken_carrier(tmp_path, "dialplan_id: cb-ani\n    pbx_id", "dialplan_id: nope\n    pbx_id")
    path.write_text(path.read_text().replace("tariff_id: retail-usd\n", "tariff_id: nowhere\n", 1))
    with pytest.raises(ConfigError) as info:
        load_carrier_config(path)
    summary = info.value.summary()
    assert "\n" not in summary and len(info.value.problems) >= 2
    assert all(str(p) in summary for p in info.value.problems)


# --- AMI secrets stay out of the reference data ---------------------------------------------------


def test_the_sample_carries_no_secret_and_publishes_none():
    config = load_carrier_config(SAMPLE)
    assert config.legacy_ami_secrets == {}
    servers = [value for topic, _key, value in config.records() if topic == "config.servers"]
    assert servers and all("secret" not in s.model_dump_json() for s in servers)


def test_an_older_file_with_ami_secret_still_loads_and_the_secret_is_not_published(tmp_path):
    path = broken_carrier(
        tmp_path, "    ami_username: callback\n", "    ami_username: callback\n    ami_secret: s3cr3t\n"
    )
    config = load_carrier_config(path)
    assert config.legacy_ami_secrets == {"pbx1": "s3cr3t"}
    servers = [value for topic, _key, value in config.records() if topic == "config.servers"]
    assert len(servers) == 2
    assert all(
        b"s3cr3t" not in s.model_dump_json().encode() and "ami_secret" not in s.model_dump() for s in servers
    )
    # re-validating keeps what the file carried (model_copy / model_validate of the instance)
    assert CarrierConfig.model_validate(config).legacy_ami_secrets == {"pbx1": "s3cr3t"}


def test_a_record_published_before_with_ami_secret_is_still_read_without_it():
    old = b'{"server_id":"pbx1","ami_host":"h","ami_username":"u","ami_secret":"s3cr3t"}'
    server = CallbackServer.model_validate_json(old)
    assert server.server_id == "pbx1" and "s3cr3t" not in server.model_dump_json()
