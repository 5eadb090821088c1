"""``callback explain initiation``: the live initiation decision on a carrier file, for the support
desk. Run on the sample carrier (examples/carrier.yaml) through the real CLI app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callback.cli import app
from processors.explain import explain_did_initiation, render
from tests.unit.processors_helpers import REPO_ROOT, T0, sample_carrier

CARRIER = REPO_ROOT / "examples" / "carrier.yaml"
US_ANI_DID = "18005550199"  # dial plan cb-ani: dropped with 21 (403)
LAGOS_PIN_DID = "2349012345678"  # dial plan cb-pin: dropped with 17 (486)
CARD_DID = "2349012345600"  # dial plan cb-card (card_number_pin): dropped with 19 (480)


def explain(*args: str):
    return CliRunner().invoke(app, ["explain", "initiation", "--config", str(CARRIER), *args])


def explain_json(*args: str) -> dict:
    result = explain(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_accepted_ani_call():
    answer = explain_json("--did", US_ANI_DID, "--ani", "12125550142")  # bob-home's registered number
    assert answer["decision"] == "accepted"
    assert answer["reason"] is None
    assert (answer["hangup_cause"], answer["sip_code"]) == (21, 403)
    assert answer["auth_method"] == "ani"
    assert answer["dialplan_id"] == "cb-ani"
    assert answer["leg_a_payer"] == {"kind": "user", "id": "bob"}
    assert answer["initiation_payer"] == {"kind": "user", "id": "bob"}
    assert answer["needs_authentication"] is False
    assert answer["callback_server"] == "pbx1"
    assert (answer["did"], answer["ani"]) == (US_ANI_DID, "12125550142")


def test_numbers_are_normalised_like_the_ami_producer_does():
    answer = explain_json("--did", "+1 800 555 0199", "--ani", "+1-212-555-0142")
    assert (answer["did"], answer["ani"], answer["decision"]) == (US_ANI_DID, "12125550142", "accepted")


def test_pin_call_is_paid_by_the_callback_user_until_recognised():
    answer = explain_json("--did", LAGOS_PIN_DID, "--ani", "2348031234567")
    assert answer["decision"] == "accepted"
    assert (answer["hangup_cause"], answer["sip_code"], answer["auth_method"]) == (17, 486, "device_pin")
    assert answer["needs_authentication"] is True
    assert answer["leg_a_payer"] == answer["initiation_payer"] == {"kind": "callback_user", "id": "cb-owner"}


def test_card_call_from_a_pinless_number_is_paid_by_the_card():
    answer = explain_json("--did", CARD_DID, "--ani", "2348059998888")
    assert answer["decision"] == "accepted"
    assert answer["needs_authentication"] is False
    assert answer["leg_a_payer"] == answer["initiation_payer"] == {"kind": "card", "id": "8800100202"}


def test_withheld_caller_id_is_refused():
    answer = explain_json("--did", US_ANI_DID)
    assert answer["decision"] == "refused"
    assert answer["reason"] == "no_caller_id"
    assert (answer["hangup_cause"], answer["sip_code"]) == (21, 403)
    assert answer["ani"] is None
    assert answer["leg_a_payer"] is None
    assert answer["initiation_payer"] == {"kind": "callback_user", "id": "cb-owner"}


def test_origin_outside_the_callback_tariff_is_refused():
    answer = explain_json("--did", LAGOS_PIN_DID, "--ani", "447700900001")
    assert (answer["decision"], answer["reason"]) == ("refused", "origin_not_allowed")
    assert (answer["hangup_cause"], answer["sip_code"]) == (17, 486)


def test_unknown_did_is_refused_with_cause_1():
    answer = explain_json("--did", "19995550000", "--ani", "12125550142")
    assert (answer["decision"], answer["reason"]) == ("refused", "unknown_did")
    assert (answer["hangup_cause"], answer["sip_code"]) == (1, 404)
    assert answer["dialplan_id"] is None and answer["auth_method"] is None


def test_text_answer_says_the_same_as_the_json():
    result = explain("--did", US_ANI_DID)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"call from (no caller ID) to {US_ANI_DID}: REFUSED"
    assert "no_caller_id" in lines[1]
    assert "Q.850 21 / SIP 403" in result.stdout


def test_text_answer_of_an_accepted_pin_call_says_who_pays_until_recognised():
    result = explain("--did", LAGOS_PIN_DID, "--ani", "2348031234567")
    assert result.exit_code == 0
    assert "leg A paid by      callback_user cb-owner  (until the caller is recognised in the IVR)" in (
        result.stdout
    )


@pytest.mark.parametrize("option,value", [("--did", "not-a-number"), ("--ani", "12ab")])
def test_malformed_number_is_exit_2_with_one_line(option, value):
    args = ["--did", US_ANI_DID] if option == "--ani" else []
    result = explain(*args, option, value)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert option in result.stderr and repr(value) in result.stderr
    assert "Traceback" not in result.output


def test_malformed_did_in_a_real_process_prints_no_traceback():
    executable = Path(sys.executable).with_name("callback")
    proc = subprocess.run(
        [str(executable), "explain", "initiation", "--config", str(CARRIER), "--did", "abc"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        "error: --did 'abc' is not a phone number (digits, optionally with a leading +)"
    ]


def test_broken_config_is_exit_2_with_file_and_line(tmp_path):
    text = CARRIER.read_text(encoding="utf-8")
    bad = "    hangup_cause: 21          # call rejected / 403 Forbidden"
    assert bad in text
    broken = text.replace(bad, "    hangup_cause: 99")
    line = broken.splitlines().index("    hangup_cause: 99") + 1
    path = tmp_path / "carrier.yaml"
    path.write_text(broken, encoding="utf-8")
    result = CliRunner().invoke(app, ["explain", "initiation", "--config", str(path), "--did", US_ANI_DID])
    assert result.exit_code == 2
    assert f"{path}:{line}" in result.stderr
    assert "hangup cause 99" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_config_that_is_not_yaml_is_exit_2_with_file_and_line(tmp_path):
    path = tmp_path / "carrier.yaml"
    path.write_text("callback_settings:\n  scope: system\n  max_retries: [3\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["explain", "initiation", "--config", str(path), "--did", US_ANI_DID])
    assert result.exit_code == 2
    assert f"{path}:" in result.stderr
    assert "not valid YAML" in result.stderr


def test_missing_config_file_is_exit_2(tmp_path):
    path = tmp_path / "nope.yaml"
    result = CliRunner().invoke(app, ["explain", "initiation", "--config", str(path), "--did", US_ANI_DID])
    assert result.exit_code == 2
    assert str(path) in result.stderr and "cannot read" in result.stderr


# --- the function behind the command --------------------------------------------------------------


def test_explain_function_and_render_agree():
    answer = explain_did_initiation(sample_carrier(), did=US_ANI_DID, ani="12125550142", at=T0)
    text = render(answer)
    assert "ACCEPTED" in text.splitlines()[0]
    assert "leg A paid by      user bob" in text
    assert "(until the caller is recognised in the IVR)" not in text


def test_explain_function_rejects_a_malformed_ani():
    with pytest.raises(ValueError, match="--ani"):
        explain_did_initiation(sample_carrier(), did=US_ANI_DID, ani="abc", at=T0)


def test_ani_then_pin_call_says_the_pin_is_still_asked(tmp_path):
    # the pipeline asks the PIN and charges leg A to the Callback User until it is right; the caller
    # recognised by ANI pays the initiation (seed: "ANI/PIN")
    text = CARRIER.read_text(encoding="utf-8")
    assert text.count("    auth_method: ani\n") == 1
    path = tmp_path / "carrier.yaml"
    path.write_text(
        text.replace("    auth_method: ani\n", "    auth_method: ani_then_pin\n"), encoding="utf-8"
    )
    result = CliRunner().invoke(
        app,
        [
            "explain",
            "initiation",
            "--config",
            str(path),
            "--did",
            US_ANI_DID,
            "--ani",
            "12125550142",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert (answer["decision"], answer["auth_method"]) == ("accepted", "ani_then_pin")
    assert answer["needs_authentication"] is True
    assert answer["leg_a_payer"] == {"kind": "callback_user", "id": "cb-owner"}
    assert answer["initiation_payer"] == {"kind": "user", "id": "bob"}
