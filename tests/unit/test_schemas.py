"""Contracts: envelopes, discriminated unions, money as Decimal, the seed's hangup causes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.callback import (
    CallbackInitiation,
    Disposition,
    FinishedLeg,
    InitiationOrigin,
    LegType,
    Payer,
    PayerKind,
    leg_id_for,
)
from schemas.envelope import SCHEMA_VERSION, money_text
from schemas.hangup_causes import CALLBACK_HANGUP_CAUSES, sip_for_q850
from schemas.pbx_commands import Originate, PbxCommandRecord
from schemas.pbx_events import ORIGINATE_REASONS, ChannelHangup, OriginateOutcome, PbxEventRecord
from schemas.rating import BalanceUpdate
from schemas.reference import CallbackSettings, Rate, Tariff
from schemas.topics import BY_NAME, CATALOGUE, CONFIG_TOPICS, dead_letter_topic
from tests.factories import system_settings

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _leg(**kw):
    base = dict(
        source="test",
        leg_id="cb1:a:0",
        callback_id="cb1",
        leg=LegType.A,
        dst="2348031234567",
        started_at=T0,
        answered_at=T0 + timedelta(seconds=5),
        ended_at=T0 + timedelta(seconds=65, milliseconds=250),
        disposition=Disposition.ANSWERED,
        payer=Payer(kind=PayerKind.USER, id="alice"),
    )
    base.update(kw)
    return FinishedLeg(**base)


def test_seed_hangup_causes_are_the_fifteen_with_sip():
    assert len(CALLBACK_HANGUP_CAUSES) == 15
    assert {c.q850 for c in CALLBACK_HANGUP_CAUSES} == {
        1,
        2,
        3,
        17,
        18,
        19,
        20,
        21,
        22,
        23,
        26,
        27,
        28,
        29,
        31,
    }
    assert sip_for_q850(17) == 486
    assert sip_for_q850(21) == 403
    assert sip_for_q850(22) == 301
    assert sip_for_q850(16) is None
    assert sip_for_q850(34) == 503


def test_money_is_decimal_and_a_string_on_the_wire():
    rate = Rate(prefix="234", rate_per_minute="0.20")
    assert rate.rate_per_minute == Decimal("0.20")
    wire = json.loads(rate.model_dump_json())
    assert wire["rate_per_minute"] == "0.20"
    bal = BalanceUpdate(
        source="t",
        payer_kind="user",
        payer_id="alice",
        balance=Decimal("24.72"),
        currency="USD",
        delta=Decimal("-0.28"),
        leg_id="x",
        sequence=1,
    )
    again = BalanceUpdate.model_validate_json(bal.model_dump_json())
    assert again.balance == Decimal("24.72") and isinstance(again.balance, Decimal)


@pytest.mark.parametrize("text", ["0E-8", "-0E-8", "1E+2", "1.2E-7", "0.00000012", "0.000001", "999.9880",
                                  "-0.0120", "12345678901.5E-1"])
def test_money_text_is_plain_notation_as_format_f_writes_it(text):
    amount = Decimal(text)
    assert money_text(amount) == format(amount, "f")
    assert "E" not in money_text(amount) and Decimal(money_text(amount)) == amount


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-10**10, max_value=10**10)
       | st.decimals(allow_nan=False, allow_infinity=False))
def test_money_text_equals_format_f_for_any_decimal(amount):
    assert money_text(amount) == format(amount, "f")


def test_rates_carry_at_most_eight_decimal_places():
    assert Rate(prefix="1", rate_per_minute="0.12345678").rate_per_minute == Decimal("0.12345678")
    with pytest.raises(ValidationError, match="decimal places"):
        Rate(prefix="1", rate_per_minute="0.123456789")


def test_money_rejects_nan_and_infinity():
    with pytest.raises(ValidationError):
        Rate(prefix="1", rate_per_minute="NaN")
    with pytest.raises(ValidationError):
        Rate(prefix="1", rate_per_minute="Infinity")


def test_envelope_defaults_and_newer_schema_version_refused():
    leg = _leg()
    assert leg.schema_version == SCHEMA_VERSION and leg.event_id and leg.time.tzinfo is not None
    data = json.loads(leg.model_dump_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValidationError, match="schema_version"):
        FinishedLeg.model_validate(data)


def test_times_without_offset_are_refused():
    data = json.loads(_leg().model_dump_json())
    data["started_at"] = "2026-11-25T12:00:00"
    with pytest.raises(ValidationError, match="timezone"):
        FinishedLeg.model_validate(data)


def test_unknown_fields_are_refused():
    data = json.loads(_leg().model_dump_json())
    data["surprise"] = 1
    with pytest.raises(ValidationError):
        FinishedLeg.model_validate(data)


def test_finished_leg_durations_in_ms_and_time_rules():
    leg = _leg()
    assert leg.duration_ms == 65_250
    assert leg.billsec_ms == 60_250
    with pytest.raises(ValidationError, match="answered_at"):
        _leg(disposition=Disposition.BUSY)
    with pytest.raises(ValidationError, match="before"):
        _leg(ended_at=T0 - timedelta(seconds=1), answered_at=None, disposition=Disposition.NO_ANSWER)
    assert leg_id_for("cb1", LegType.B, 2) == "cb1:b:2"


def test_pbx_event_union_is_told_apart_by_type():
    hangup = ChannelHangup(
        source="ami/pbx1",
        pbx_id="pbx1",
        channel="SIP/x-1",
        uniqueid="1.1",
        linkedid="1.1",
        q850_cause=17,
        cause_text="User busy",
        sip_code=486,
        occurred_at=T0,
    )
    record = PbxEventRecord.model_validate_json(hangup.model_dump_json())
    assert isinstance(record.root, ChannelHangup) and record.root.q850_cause == 17
    assert record.root.kafka_key == "1.1"
    with pytest.raises(ValidationError):
        PbxEventRecord.model_validate({"type": "channel.exploded", "source": "x"})


def test_originate_reasons_cover_the_issue_table():
    assert ORIGINATE_REASONS == {
        0: OriginateOutcome.FAILED,
        1: OriginateOutcome.HANGUP,
        3: OriginateOutcome.NO_ANSWER,
        4: OriginateOutcome.ANSWERED,
        5: OriginateOutcome.BUSY,
        8: OriginateOutcome.CONGESTION,
    }


def test_commands_refuse_ami_header_injection():
    ok = Originate(
        source="p",
        command_id="cb1:a:0:originate",
        callback_id="cb1",
        server_id="pbx1",
        attempt=0,
        number="2348031234567",
        channel="Local/2348031234567@callback-out",
        context="callback-a",
        timeout_ms=30000,
        variables={"CALLBACK_ID": "cb1"},
    )
    assert PbxCommandRecord.model_validate_json(ok.model_dump_json()).root == ok
    with pytest.raises(ValidationError):
        Originate(**{**ok.model_dump(), "channel": "Local/1@x\r\nAction: Hangup"})


def test_initiation_shapes():
    CallbackInitiation(
        source="ami/pbx1",
        callback_id="cb1",
        origin=InitiationOrigin.DID,
        ani="2348031234567",
        did="2349012345678",
        channel="SIP/trunk-1",
        received_at=T0,
    )
    with pytest.raises(ValidationError, match="web initiation"):
        CallbackInitiation(source="web", callback_id="cb2", origin=InitiationOrigin.WEB, received_at=T0)


def test_settings_overlay_and_system_completeness():
    with pytest.raises(ValidationError, match="must set"):
        CallbackSettings(scope="system", max_retries=3)
    system = system_settings(send_device_cid=True)
    merged = system.overlay(CallbackSettings(scope="did:123", wait_time_s=45))
    assert merged.wait_time_s == 45 and merged.max_retries == 3 and merged.scope == "system"


def test_tariff_refuses_duplicate_prefix():
    with pytest.raises(ValidationError, match="twice"):
        Tariff(
            tariff_id="t",
            rates=[Rate(prefix="34", rate_per_minute="0.1"), Rate(prefix="34", rate_per_minute="0.2")],
        )


def test_catalogue_compaction_and_dead_letters():
    assert len({t.name for t in CATALOGUE}) == len(CATALOGUE)
    for spec in CONFIG_TOPICS:
        assert spec.configs()["cleanup.policy"] == "compact"
    assert BY_NAME["accounts.balances"].configs()["cleanup.policy"] == "compact"
    assert BY_NAME["auth.web_credentials"].configs()["cleanup.policy"] == "compact"
    assert BY_NAME["cdr.rated"].configs()["cleanup.policy"] == "delete"
    assert dead_letter_topic("callback.legs") == "dlq.callback.legs"
    with pytest.raises(KeyError):
        dead_letter_topic("nope")
