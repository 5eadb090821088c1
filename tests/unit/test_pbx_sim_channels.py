"""Dial strings and caller IDs as Asterisk reads them: the number decides the scenario."""

from __future__ import annotations

import pytest

from infra.pbx_sim.channels import InvalidChannel, parse_caller_id, parse_dial_target, variable_base


@pytest.mark.parametrize(
    ("channel", "number", "prefix", "dial_string"),
    [
        ("PJSIP/37060000001@carrier", "37060000001", "PJSIP/carrier", "37060000001@carrier"),
        ("SIP/carrier/37060000001", "37060000001", "SIP/carrier", "carrier/37060000001"),
        ("SIP/201", "201", "SIP/201", "201"),
        ("IAX2/peer/+4930123", "+4930123", "IAX2/peer", "peer/+4930123"),
        (
            "Local/37060000001@callback-out/n",
            "37060000001",
            "Local/37060000001@callback-out",
            "37060000001@callback-out/n",
        ),
    ],
)
def test_dial_targets(channel: str, number: str, prefix: str, dial_string: str) -> None:
    target = parse_dial_target(channel)
    assert (target.number, target.name_prefix, target.dial_string) == (number, prefix, dial_string)


def test_local_targets_know_their_context_and_options() -> None:
    target = parse_dial_target("Local/123@callback-out/n")
    assert target.is_local and (target.context, target.local_options) == ("callback-out", "n")
    assert parse_dial_target("Local/123").context == "default"


@pytest.mark.parametrize("channel", ["", "PJSIP", "PJSIP/", "/123", "Local/@ctx", "PJSIP/@carrier"])
def test_invalid_channels(channel: str) -> None:
    with pytest.raises(InvalidChannel):
        parse_dial_target(channel)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Callback Service" <37052000100>', ("37052000100", "Callback Service")),
        ("Callback <+37052000100>", ("+37052000100", "Callback")),
        ("<37052000100>", ("37052000100", "")),
        ("37052000100", ("37052000100", "")),
        ("Anonymous", ("", "Anonymous")),
        (None, ("", "")),
    ],
)
def test_caller_ids(value: str | None, expected: tuple[str, str]) -> None:
    assert parse_caller_id(value) == expected


def test_inheritance_prefixes_are_not_part_of_the_name() -> None:
    assert [variable_base(n) for n in ("__CALLBACK_ID", "_LEG", "ATTEMPT")] == [
        "CALLBACK_ID",
        "LEG",
        "ATTEMPT",
    ]
