"""The callback end to end on the real stack: PBX simulator (real AMI over TCP), AMI producer,
originator and processors worker as real processes, real Kafka. One scenario per rule of the seed;
each asserts the outcome, the PBX commands, the finished legs and what the PBX received.

One rig for the module (starting the processes takes seconds); every scenario uses its own
numbers, so scenarios do not see each other.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from infra.process import wait_until
from infra.rig import CallbackProcess, RunNumbers, free_port
from producers.auth import hash_password
from schemas.callback import LegType as L
from schemas.callback import command_id_for, leg_id_for
from tests.callback_rig import CallbackRig

pytestmark = pytest.mark.integration

N = RunNumbers()
# callers (every one allowed by the Callback Tariff: 234..., 1...)
ANI_KNOWN = N.ani(1)  # registered to ana's device: ANI callbacks
PIN_CALLER = N.ani(2)  # keys ana's PIN
CARD_CALLER = N.ani(3)  # keys card number + PIN
PINLESS = N.ani(4)  # a card's pinless number
WRONG_PIN = N.ani(5)
BUSY_TWICE = N.ani(6)
NEVER_ANSWERS = N.ani(7)
B_BUSY_CALLER = N.ani(8)
B_UNREACH_CALLER = N.ani(9)
POOR = N.ani(10)  # registered to a device of a user with 1 cent
UNKNOWN_ANI = N.ani(11)
NOT_ALLOWED_ORIGIN = f"44{N.block}12"  # UK: no rate in the Callback Tariff
FRAUD_ANI = N.ani(13)
WEB_NUMBER = N.ani(14)
OFF_CALLER = N.ani(15)
BLOCKED = f"870{N.block}16"  # Inmarsat: blocked by default

DEST_OK, DEST_BUSY, DEST_UNREACH = N.dest(1), N.dest(2), N.dest(3)
ANA_PIN, POOR_PIN, CARD_PIN = N.pin(1), N.pin(2), N.pin(3)
CARD, PINLESS_CARD = N.card(1), N.card(2)
DID = {name: N.did(i) for i, name in enumerate(["pin", "ani", "card", "pinless", "off", "fraud", "open"], 1)}
CAUSE = {"pin": 17, "ani": 21, "card": 19, "pinless": 31, "off": 29, "fraud": 21, "open": 17}
WEB_PASSWORD = "correct horse battery staple"

ANSWERS = {"answer_after": 0.3, "input_delay": 0.2, "talk_seconds": 1.0, "fail_after": 0.2}
SUBSCRIBERS: dict[str, dict[str, Any]] = {
    ANI_KNOWN: {**ANSWERS, "destination": DEST_OK},
    PIN_CALLER: {**ANSWERS, "pin": ANA_PIN, "destination": DEST_OK},
    CARD_CALLER: {**ANSWERS, "card_number": CARD, "pin": CARD_PIN, "destination": DEST_OK},
    PINLESS: {**ANSWERS, "destination": DEST_OK},
    WRONG_PIN: {**ANSWERS, "pin": ["0000", "1111", "2222"]},
    BUSY_TWICE: {**ANSWERS, "outcomes": ["busy", "busy", "answer"], "pin": ANA_PIN, "destination": DEST_OK},
    NEVER_ANSWERS: {**ANSWERS, "outcome": "no_answer"},
    B_BUSY_CALLER: {**ANSWERS, "pin": ANA_PIN, "destination": DEST_BUSY},
    B_UNREACH_CALLER: {**ANSWERS, "pin": ANA_PIN, "destination": DEST_UNREACH},
    POOR: {**ANSWERS, "destination": DEST_OK},
    FRAUD_ANI: {**ANSWERS, "destination": DEST_OK, "talk_seconds": 4.0},
    WEB_NUMBER: {**ANSWERS},
    DEST_OK: {**ANSWERS, "talk_seconds": 1.5},
    DEST_BUSY: {"outcome": "busy", "fail_after": 0.2},
    DEST_UNREACH: {"outcome": "unreachable", "hangup_cause": 1, "fail_after": 0.2},
}


def carrier(tag: str, server: str) -> dict[str, Any]:
    owner, ana, poor = f"owner-{tag}", f"ana-{tag}", f"poor-{tag}"
    common = {
        "callback_server_id": server,
        "callback_user_id": owner,
        "callback_device_id": f"owner-dev-{tag}",
        "wait_time_s": 5,
        "retry_time_s": 1,
        "max_retries": 2,
        "initiation_ring_s": 0,
        "pin_attempts": 3,
        "busy_ivr": "busy-msg",
        "failed_ivr": "failed-msg",
        "active_for_users": True,
        # these scenarios re-use nothing, so only the fraud dial plan below limits anything
        "max_initiations_per_ani_per_minute": 0,
        "one_live_session_per_ani": False,
    }

    def plan(name: str, method: str, **settings: Any) -> dict[str, Any]:
        return {
            "dialplan_id": f"{name}-{tag}",
            "auth_method": method,
            "hangup_cause": CAUSE[name],
            "settings": {"scope": f"dialplan:{name}-{tag}", **common, **settings},
        }

    return {
        "callback_settings": {"scope": "system", "send_device_cid": True, "send_source_as_cid": False,
                              "default_cid": "18005550100", **common},
        "tariffs": [
            {"tariff_id": f"origins-{tag}", "rates": [
                {"prefix": "234", "rate_per_minute": "0.20", "increment_s": 60},
                {"prefix": "1", "rate_per_minute": "0.01", "increment_s": 6},
                # the seed's warning: an Inmarsat rate in the Callback Tariff; the blocklist saves us
                {"prefix": "870", "rate_per_minute": "9.00", "increment_s": 60},
            ]},
            {"tariff_id": f"retail-{tag}", "rates": [
                {"prefix": "234", "rate_per_minute": "0.20", "increment_s": 60},
                {"prefix": "34", "rate_per_minute": "0.08", "increment_s": 1},
            ]},
            {"tariff_id": f"cards-{tag}", "rates": [
                {"prefix": "234", "rate_per_minute": "0.25", "increment_s": 60, "connection_fee": "0.05"},
                {"prefix": "34", "rate_per_minute": "0.10", "increment_s": 30, "minimal_time_s": 30},
            ]},
        ],
        "users": [
            {"user_id": owner, "name": "owner", "tariff_id": f"origins-{tag}", "prepaid": False,
             "credit_limit": "1000000"},
            {"user_id": ana, "name": "ana", "tariff_id": f"retail-{tag}", "balance": "25.00",
             "web_username": f"ana-{tag}", "web_password_hash": hash_password(WEB_PASSWORD, f"salt-{tag}")},
            {"user_id": poor, "name": "poor", "tariff_id": f"retail-{tag}", "balance": "0.01"},
        ],
        "devices": [
            {"device_id": f"owner-dev-{tag}", "user_id": owner},
            {"device_id": f"ana-dev-{tag}", "user_id": ana, "pin": ANA_PIN, "caller_id": ANI_KNOWN,
             "registered_numbers": [ANI_KNOWN, FRAUD_ANI]},
            {"device_id": f"poor-dev-{tag}", "user_id": poor, "pin": POOR_PIN, "registered_numbers": [POOR]},
        ],
        "cards": [
            {"number": CARD, "pin": CARD_PIN, "tariff_id": f"cards-{tag}", "balance": "10.00"},
            {"number": PINLESS_CARD, "pin": N.pin(4), "tariff_id": f"cards-{tag}", "balance": "5.00",
             "pinless_numbers": [PINLESS]},
        ],
        "dialplans": [
            plan("pin", "device_pin"),
            plan("ani", "ani"),
            plan("card", "card_number_pin"),
            plan("pinless", "card_pinless"),
            plan("off", "device_pin", active_for_users=False),
            plan("fraud", "ani", max_initiations_per_ani_per_minute=2, one_live_session_per_ani=True),
            plan("open", "device_pin", max_retries=1),
        ],
        "dids": [{"number": DID[name], "dialplan_id": f"{name}-{tag}", "pbx_id": server} for name in DID],
    }


@pytest.fixture(scope="module")
def rig(stack, tmp_path_factory) -> Iterator[CallbackRig]:
    r = CallbackRig(tmp_path_factory.mktemp("processors"), carrier, SUBSCRIBERS)
    yield r
    r.close()


def states(rig: CallbackRig, cb: str) -> list[str]:
    return [t["to_state"] for t in rig.transitions(cb)]


def types(rig: CallbackRig, cb: str) -> list[str]:
    return [c["type"] for c in rig.commands(cb)]


def payers(rig: CallbackRig, cb: str) -> dict[str, str]:
    return {leg_id: f"{leg['payer']['kind']}:{leg['payer']['id']}" for leg_id, leg in rig.legs(cb).items()}


def the_command(rig: CallbackRig, cb: str, type_: str, **where: Any) -> dict[str, Any]:
    found = [
        c for c in rig.commands(cb) if c["type"] == type_ and all(c.get(k) == v for k, v in where.items())
    ]
    assert len(found) == 1, f"{len(found)} {type_} commands {where}: {rig.commands(cb)}"
    return found[0]


# --- callbacks that complete ---------------------------------------------------------------------


def test_ani_callback_completes_and_the_recognised_user_pays_all_three_legs(rig):
    cb = rig.call(ANI_KNOWN, DID["ani"])
    final = rig.outcome(cb, legs=3)
    assert final["to_state"] == "completed", rig.diagnose(cb)
    assert states(rig, cb) == [
        "requested", "scheduled", "originating_a", "a_answered", "awaiting_destination", "dialing_b",
        "bridged", "completed",
    ]
    hangup = the_command(rig, cb, "pbx.hangup", command_id=command_id_for(cb, L.INITIATION, 0, "hangup"))
    assert hangup["cause"] == CAUSE["ani"] and hangup["server_id"] == rig.server
    originate = the_command(rig, cb, "pbx.originate")
    assert originate["number"] == ANI_KNOWN and originate["timeout_ms"] == 5000
    assert originate["caller_id_num"] == ANI_KNOWN  # Send Device CID: the recognised device's CID
    dial = the_command(rig, cb, "pbx.dial_b")
    assert dial["number"] == DEST_OK and dial["max_duration_s"] > 0
    ana = f"user:ana-{rig.tag}"
    assert payers(rig, cb) == {
        leg_id_for(cb, L.INITIATION, 0): ana, leg_id_for(cb, L.A, 1): ana, leg_id_for(cb, L.B, 1): ana,
    }
    legs = rig.legs(cb)
    assert legs[leg_id_for(cb, L.B, 1)]["disposition"] == "ANSWERED"
    assert legs[leg_id_for(cb, L.INITIATION, 0)]["q850_cause"] == CAUSE["ani"]
    assert rig.originates_to(ANI_KNOWN) == 1
    assert not [e for e in rig.pbx_actions("Redirect") if e.get("Context") == "callback-pin"
                and (e.get("Channel") or "").startswith(f"Local/{ANI_KNOWN}@")]


def test_device_pin_callback_completes_the_callback_user_pays_the_initiation(rig):
    cb = rig.call(PIN_CALLER, DID["pin"])
    assert rig.outcome(cb, legs=3)["to_state"] == "completed", rig.diagnose(cb)
    assert "authenticating" in states(rig, cb)
    contexts = [c["context"] for c in rig.commands(cb) if c["type"] == "pbx.redirect"]
    assert contexts == ["callback-pin", "callback-destination"]
    ana, owner = f"user:ana-{rig.tag}", f"callback_user:owner-{rig.tag}"
    assert payers(rig, cb) == {
        leg_id_for(cb, L.INITIATION, 0): owner, leg_id_for(cb, L.A, 1): ana, leg_id_for(cb, L.B, 1): ana,
    }


def test_card_number_and_pin_callback_completes_and_the_card_pays(rig):
    cb = rig.call(CARD_CALLER, DID["card"])
    assert rig.outcome(cb, legs=3)["to_state"] == "completed", rig.diagnose(cb)
    contexts = [c["context"] for c in rig.commands(cb) if c["type"] == "pbx.redirect"]
    assert contexts == ["callback-card-number", "callback-pin", "callback-destination"]
    card = f"card:{CARD}"
    assert payers(rig, cb)[leg_id_for(cb, L.A, 1)] == card
    assert payers(rig, cb)[leg_id_for(cb, L.B, 1)] == card


def test_pinless_card_is_recognised_by_caller_id_and_pays_the_initiation_too(rig):
    cb = rig.call(PINLESS, DID["pinless"])
    assert rig.outcome(cb, legs=3)["to_state"] == "completed", rig.diagnose(cb)
    assert "authenticating" not in states(rig, cb)
    assert set(payers(rig, cb).values()) == {f"card:{PINLESS_CARD}"}


# --- authentication, retries and leg B failures ----------------------------------------------------


def test_three_wrong_pins_play_the_failed_ivr_and_end_auth_failed(rig):
    cb = rig.call(WRONG_PIN, DID["pin"])
    final = rig.outcome(cb, legs=2)
    assert final["to_state"] == "auth_failed" and "wrong_pin" in final["reason"], rig.diagnose(cb)
    redirects = [(c["context"], c["exten"]) for c in rig.commands(cb) if c["type"] == "pbx.redirect"]
    assert redirects == [("callback-pin", "s")] * 3 + [("callback-failed-ivr", "failed-msg")]
    # the PBX played the Failed IVR, and the unauthenticated leg A is the Callback User's
    played = [e for e in rig.pbx_actions("Redirect") if e.get("Context") == "callback-failed-ivr"
              and (e.get("Channel") or "").startswith(f"Local/{WRONG_PIN}@")]
    assert len(played) == 1
    assert payers(rig, cb)[leg_id_for(cb, L.A, 1)] == f"callback_user:owner-{rig.tag}"


def test_leg_a_busy_twice_then_answered_completes_after_two_retries_spaced_by_retry_time(rig):
    cb = rig.call(BUSY_TWICE, DID["pin"])
    assert rig.outcome(cb, legs=5, timeout=90)["to_state"] == "completed", rig.diagnose(cb)
    scheduled = [t for t in rig.transitions(cb) if t["to_state"] == "scheduled"]
    assert [t["attempt"] for t in scheduled] == [1, 2, 3]
    assert [t["reason"] for t in scheduled[1:]] == ["leg_a_busy", "leg_a_busy"]
    originates = [c for c in rig.commands(cb) if c["type"] == "pbx.originate"]
    assert [c["attempt"] for c in originates] == [1, 2, 3]
    legs = rig.legs(cb)
    assert [legs[leg_id_for(cb, L.A, n)]["disposition"] for n in (1, 2, 3)] == ["BUSY", "BUSY", "ANSWERED"]
    # Retry Time (1 s) between a failed attempt and the next originate
    from datetime import datetime

    def at(record: dict[str, Any], key: str = "time") -> float:
        return datetime.fromisoformat(record[key].replace("Z", "+00:00")).timestamp()

    for failed, retry in ((1, 2), (2, 3)):
        ended = at(legs[leg_id_for(cb, L.A, failed)], "ended_at")
        assert at(originates[retry - 1]) - ended >= 0.9
    assert rig.originates_to(BUSY_TWICE) == 3


def test_leg_a_never_answering_ends_failed_a_after_max_retries(rig):
    cb = rig.call(NEVER_ANSWERS, DID["open"])  # Max Retries 1 on this dial plan: two attempts
    final = rig.outcome(cb, legs=3, timeout=90)
    assert final["to_state"] == "failed_a", rig.diagnose(cb)
    legs = rig.legs(cb)
    assert {legs[leg_id_for(cb, L.A, n)]["disposition"] for n in (1, 2)} == {"NO ANSWER"}
    assert rig.originates_to(NEVER_ANSWERS) == 2


def test_leg_b_busy_plays_the_busy_ivr(rig):
    cb = rig.call(B_BUSY_CALLER, DID["pin"])
    final = rig.outcome(cb, legs=3)
    assert (final["to_state"], final["reason"]) == ("failed_b", "destination_busy"), rig.diagnose(cb)
    redirect = the_command(rig, cb, "pbx.redirect", purpose="busy_ivr")
    assert (redirect["context"], redirect["exten"]) == ("callback-busy-ivr", "busy-msg")
    assert rig.legs(cb)[leg_id_for(cb, L.B, 1)]["disposition"] == "BUSY"


def test_leg_b_unreachable_plays_the_failed_ivr(rig):
    cb = rig.call(B_UNREACH_CALLER, DID["pin"])
    final = rig.outcome(cb, legs=3)
    assert (final["to_state"], final["reason"]) == ("failed_b", "destination_chanunavail"), rig.diagnose(cb)
    assert the_command(rig, cb, "pbx.redirect", purpose="failed_ivr")["context"] == "callback-failed-ivr"


def test_a_balance_too_small_refuses_the_destination(rig):
    cb = rig.call(POOR, DID["ani"])
    final = rig.outcome(cb, legs=2)
    assert (final["to_state"], final["reason"]) == ("failed_b", "insufficient_balance"), rig.diagnose(cb)
    assert "pbx.dial_b" not in types(rig, cb)
    assert the_command(rig, cb, "pbx.redirect", purpose="failed_ivr")


# --- refused initiations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ani,did,reason",
    [
        (NOT_ALLOWED_ORIGIN, "pin", "origin_not_allowed"),
        (OFF_CALLER, "off", "not_active"),
        (None, "pin", "no_caller_id"),
        (UNKNOWN_ANI, "ani", "unknown_ani"),
        (BLOCKED, "pin", "fraud_blocked_prefix"),
    ],
)
def test_refused_initiations_are_dropped_with_the_dial_plans_cause(rig, ani, did, reason):
    cb = rig.call(ani, DID[did])
    final = rig.outcome(cb, legs=1)
    assert (final["to_state"], final["reason"]) == ("rejected", reason), rig.diagnose(cb)
    hangup = the_command(rig, cb, "pbx.hangup")
    assert hangup["cause"] == CAUSE[did]
    assert types(rig, cb) == ["pbx.hangup"]
    leg = rig.legs(cb)[leg_id_for(cb, L.INITIATION, 0)]
    assert leg["q850_cause"] == CAUSE[did] and leg["payer"]["kind"] == "callback_user"
    if ani is not None:
        assert rig.originates_to(ani) == 0


# --- web callback and fraud guards -------------------------------------------------------------------


def test_a_web_callback_calls_back_and_dials_the_requested_destination(rig, tmp_path):
    port = free_port()
    web = CallbackProcess(["web", "--port", str(port)], tmp_path / "web.log").start()
    try:
        web.wait_for_log("listening on", timeout=60)
        token = base64.b64encode(f"ana-{rig.tag}:{WEB_PASSWORD}".encode()).decode()
        body = json.dumps({"callback_number": WEB_NUMBER, "destination": DEST_OK}).encode()

        def post() -> dict[str, Any] | None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/callbacks", data=body, method="POST",
                headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                # 401: the web process has not read this run's user yet; 429: those early
                # failures used up the user's allowance of wrong passwords, wait as told
                if exc.code == 401:
                    return None
                if exc.code == 429:
                    time.sleep(float(exc.headers.get("Retry-After", "1")))
                    return None
                raise

        cb = wait_until(post, 60, "the web API to accept the request", interval=0.5)["callback_id"]
    finally:
        web.stop()
    final = rig.outcome(cb, legs=2)
    assert final["to_state"] == "completed", rig.diagnose(cb)
    assert "authenticating" not in states(rig, cb) and "awaiting_destination" not in states(rig, cb)
    assert the_command(rig, cb, "pbx.dial_b")["number"] == DEST_OK
    # a web request has no initiation call to drop
    hangups = [c for c in rig.commands(cb) if c["type"] == "pbx.hangup"]
    assert [c for c in hangups if c["channel"].startswith("PJSIP/")] == []
    ana = f"user:ana-{rig.tag}"
    assert payers(rig, cb) == {leg_id_for(cb, L.A, 1): ana, leg_id_for(cb, L.B, 1): ana}


def test_fraud_guards_refuse_a_second_live_session_and_a_third_initiation_a_minute(rig):
    first = rig.call(FRAUD_ANI, DID["fraud"])
    wait_until(lambda: "originating_a" in states(rig, first), 30, "the first callback to start")
    second = rig.call(FRAUD_ANI, DID["fraud"])  # the first is still under way
    final = rig.outcome(second, legs=1)
    assert (final["to_state"], final["reason"]) == ("rejected", "fraud_live_session"), rig.diagnose(second)
    assert rig.outcome(first, legs=3)["to_state"] == "completed", rig.diagnose(first)
    third = rig.call(FRAUD_ANI, DID["fraud"])  # two initiations within the minute already
    final = rig.outcome(third, legs=1)
    assert (final["to_state"], final["reason"]) == ("rejected", "fraud_ani_rate"), rig.diagnose(third)
    assert rig.originates_to(FRAUD_ANI) == 1
    assert the_command(rig, third, "pbx.hangup")["cause"] == CAUSE["fraud"]


def test_every_leg_of_the_run_is_priced_by_the_rater_unchanged(rig):
    """The finished legs the processors publish are complete contracts the rater prices as they are:
    quote each against this run's tariffs with the rater's own engine (no dead letter)."""
    from callback.reference import ReferenceData
    from rating_stream.engine import quote
    from rating_stream.payer import payer_terms
    from schemas.callback import FinishedLeg

    ref = ReferenceData.from_carrier_config(rig.config)
    legs = [FinishedLeg.model_validate(v) for t, _k, v in rig.tail.records if t == "callback.legs"
            and v["callback_id"].startswith(f"{rig.server}.")]
    assert len(legs) >= 20
    total = Decimal(0)
    for leg in legs:
        terms = payer_terms(leg.payer, ref)
        total += quote(terms.tariff, leg.dst, leg.billsec_ms, leg.answered_at is not None).price
    assert total > 0


def test_a_malformed_input_is_dead_lettered_and_the_next_one_on_its_partition_goes_on(rig):
    from datetime import UTC, datetime

    from confluent_kafka import Producer

    from callback.kafka_io import producer_config
    from callback.topic_reader import read_topics
    from schemas.callback import CallbackInitiation, InitiationOrigin
    from schemas.envelope import DeadLetter

    cb = f"web-poison-{rig.tag}"
    good = CallbackInitiation(
        source="test", callback_id=cb, origin=InitiationOrigin.WEB, callback_number=WEB_NUMBER,
        destination=DEST_OK, user_id=f"ana-{rig.tag}", received_at=datetime.now(UTC),
    )
    producer = Producer(producer_config())
    for value in (b"{not json", b'{"type": "callback.initiation", "callback_id": 7}', good.to_bytes()):
        producer.produce("callback.requests", key=cb.encode(), value=value)  # one partition, in order
    assert producer.flush(10) == 0
    assert rig.outcome(cb, legs=2)["to_state"] == "completed", rig.diagnose(cb)

    def letters() -> list[DeadLetter]:
        found: list[DeadLetter] = []
        read_topics("poison", ["dlq.callback.requests"],
                    lambda m: found.append(DeadLetter.model_validate_json(m.value()))
                    if m.key() == cb.encode() else None)
        return found

    kinds = wait_until(lambda: sorted(x.error_kind for x in letters()) or None, 30, "the dead letters")
    assert kinds == ["invalid_schema", "malformed_json"]
    assert rig.processors.proc.poll() is None  # the worker is still running
