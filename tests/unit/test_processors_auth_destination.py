"""``processors.auth.authenticate`` (every method, success and each failure) and
``processors.destination`` (rate, balance, postpaid credit, the ledger balance, leg B's limit)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from processors.auth import AuthFailure, authenticate
from processors.destination import decide_destination, spendable_balance
from processors.state import Identity
from schemas.callback import Payer, PayerKind
from schemas.rating import BalanceUpdate
from schemas.reference import AuthMethod, CallingCard, Device, Rate
from schemas.topics import ACCOUNTS_BALANCES, CONFIG_CARDS, CONFIG_DEVICES, CONFIG_USERS
from tests.unit.processors_helpers import (
    ALICE_ANI,
    ALICE_PIN,
    CARD,
    DEAD_CARD,
    FREE,
    RETAIL_RATES,
    SPAIN,
    T0,
    UK,
    longest_affordable,
    make_ref,
)

ALICE = Payer(kind=PayerKind.USER, id="alice")
DAVE = Payer(kind=PayerKind.USER, id="dave")
POOR = Payer(kind=PayerKind.USER, id="poor")
THE_CARD = Payer(kind=PayerKind.CARD, id=CARD)
ALICE_DEVICE = Identity(payer=ALICE, device_id="alice-mobile", device_cid="2348031230000")


def failure(result) -> str:
    assert isinstance(result, AuthFailure), result
    return result.reason


def ledger(ref, payer: Payer, balance: str) -> None:
    """A balance the rater wrote to accounts.balances."""
    update = BalanceUpdate(
        source="rater",
        payer_kind=payer.kind,
        payer_id=payer.id,
        balance=Decimal(balance),
        currency="USD",
        delta=Decimal("-1"),
        leg_id="x:a:1",
        sequence=1,
    )
    ref.apply_model(ACCOUNTS_BALANCES.name, payer.key, update)


# === authentication ===============================================================================


def test_device_pin_names_the_devices_user():
    assert authenticate(AuthMethod.DEVICE_PIN, ALICE_PIN, make_ref()) == ALICE_DEVICE


def test_device_pin_wrong_pin():
    assert failure(authenticate(AuthMethod.DEVICE_PIN, "0000", make_ref())) == "wrong_pin"


def test_device_pin_shared_by_two_devices_is_ambiguous():
    ref = make_ref()
    ref.apply_model(CONFIG_DEVICES.name, "dave-2", Device(device_id="dave-2", user_id="dave", pin=ALICE_PIN))
    assert failure(authenticate(AuthMethod.DEVICE_PIN, ALICE_PIN, ref)) == "ambiguous_pin"
    ref.apply_model(CONFIG_DEVICES.name, "dave-2", None)
    assert authenticate(AuthMethod.DEVICE_PIN, ALICE_PIN, ref) == ALICE_DEVICE


@pytest.mark.parametrize("pin", ["7315", "5555"], ids=["blocked", "callback_disabled"])
def test_device_pin_of_a_user_who_may_not_use_callback(pin):
    assert failure(authenticate(AuthMethod.DEVICE_PIN, pin, make_ref())) == "user_not_allowed"


def test_device_pin_of_a_device_whose_user_is_gone():
    ref = make_ref()
    ref.apply_model(CONFIG_USERS.name, "alice", None)
    assert failure(authenticate(AuthMethod.DEVICE_PIN, ALICE_PIN, ref)) == "wrong_pin"


@pytest.mark.parametrize("method", list(AuthMethod))
def test_an_empty_entry_fails_every_method(method):
    assert failure(authenticate(method, "", make_ref(), recognised=ALICE_DEVICE, card_number=CARD)) == (
        "no_pin_entered"
    )


def test_ani_then_pin_accepts_the_recognised_devices_pin():
    assert (
        authenticate(AuthMethod.ANI_THEN_PIN, ALICE_PIN, make_ref(), recognised=ALICE_DEVICE) == ALICE_DEVICE
    )


def test_ani_then_pin_refuses_another_devices_pin():
    # 6666 is dave's device's PIN: valid for Device PIN, not for a caller recognised as alice
    ref = make_ref()
    assert isinstance(authenticate(AuthMethod.DEVICE_PIN, "6666", ref), Identity)
    assert failure(authenticate(AuthMethod.ANI_THEN_PIN, "6666", ref, recognised=ALICE_DEVICE)) == "wrong_pin"


def test_ani_then_pin_without_a_recognised_device_fails():
    assert failure(authenticate(AuthMethod.ANI_THEN_PIN, ALICE_PIN, make_ref())) == "wrong_pin"


def test_ani_then_pin_of_a_user_blocked_since_the_initiation():
    ref = make_ref()
    ref.apply_model(CONFIG_USERS.name, "alice", ref.users["alice"].model_copy(update={"blocked": True}))
    assert failure(authenticate(AuthMethod.ANI_THEN_PIN, ALICE_PIN, ref, recognised=ALICE_DEVICE)) == (
        "user_not_allowed"
    )


def test_card_pin_names_the_card():
    assert authenticate(AuthMethod.CARD_PIN, "1111", make_ref()) == Identity(payer=THE_CARD)


def test_card_pin_wrong_pin():
    assert failure(authenticate(AuthMethod.CARD_PIN, "4321", make_ref())) == "wrong_pin"


def test_card_pin_of_an_inactive_card():
    assert failure(authenticate(AuthMethod.CARD_PIN, "9999", make_ref())) == "card_inactive"


def test_card_pin_shared_by_two_cards_is_ambiguous():
    ref = make_ref()
    ref.apply_model(
        CONFIG_CARDS.name, "8800100300", CallingCard(number="8800100300", pin="1111", tariff_id="cards")
    )
    assert failure(authenticate(AuthMethod.CARD_PIN, "1111", ref)) == "ambiguous_pin"


def test_card_number_and_pin_name_the_card():
    result = authenticate(AuthMethod.CARD_NUMBER_PIN, "1111", make_ref(), card_number=CARD)
    assert result == Identity(payer=THE_CARD)


@pytest.mark.parametrize(
    "number,pin",
    [("8800100299", "1111"), (CARD, "2222"), (None, "1111")],
    ids=["wrong_card_number", "wrong_pin", "no_card_number"],
)
def test_card_number_pin_failures_do_not_say_which_part_was_wrong(number, pin):
    assert failure(authenticate(AuthMethod.CARD_NUMBER_PIN, pin, make_ref(), card_number=number)) == (
        "wrong_card_or_pin"
    )


def test_card_number_pin_of_an_inactive_card():
    assert failure(authenticate(AuthMethod.CARD_NUMBER_PIN, "9999", make_ref(), card_number=DEAD_CARD)) == (
        "card_inactive"
    )


def test_card_number_pin_with_another_cards_pin_fails():
    assert failure(authenticate(AuthMethod.CARD_NUMBER_PIN, "3333", make_ref(), card_number=CARD)) == (
        "wrong_card_or_pin"
    )


@pytest.mark.parametrize("method", [AuthMethod.ANI, AuthMethod.CARD_PINLESS])
def test_methods_that_recognise_by_caller_id_ask_no_pin(method):
    assert failure(authenticate(method, ALICE_PIN, make_ref())) == f"{method.value}_asks_no_pin"


# === destination ==================================================================================


def decide(
    payer: Payer,
    destination: str,
    ref=None,
    *,
    leg_a: str | None = None,
    answered_s: float | None = None,
    now_s: float = 0,
):
    return decide_destination(
        payer,
        destination,
        ref if ref is not None else make_ref(),
        leg_a_number=leg_a,
        leg_a_answered_at=T0 + timedelta(seconds=answered_s) if answered_s is not None else None,
        now=T0 + timedelta(seconds=now_s),
    )


def test_destination_without_rate_is_refused():
    decision = decide(ALICE, "99912345")
    assert (decision.allowed, decision.reason) == (False, "no_rate_for_destination")


def test_destination_of_an_unknown_payer_is_refused():
    decision = decide(Payer(kind=PayerKind.USER, id="mallory"), SPAIN)
    assert not decision.allowed and decision.reason == "payer_not_rateable: unknown_payer"


def test_destination_the_balance_cannot_pay_is_refused():
    decision = decide(POOR, SPAIN)  # 0.001 buys not even one second at 0.08 / min (0.00133)
    assert (decision.allowed, decision.reason, decision.max_duration_s) == (False, "insufficient_balance", 0)
    assert decision.balance == Decimal("0.001")


def test_a_single_leg_gets_what_the_balance_pays_for():
    decision = decide(ALICE, SPAIN)
    expected = int(Decimal("25.00") * 60 / Decimal("0.08"))  # 18750 s: 1 s increment, no fee
    assert (decision.allowed, decision.max_duration_s) == (True, expected)
    assert decision.rate == RETAIL_RATES["34"]


def test_leg_a_running_alongside_is_paid_from_the_same_balance():
    # leg A to alice's own number (2348: 0.22 / min in 60 s blocks), answered 5.2 s ago: 6 started seconds
    decision = decide(ALICE, SPAIN, leg_a=ALICE_ANI, answered_s=0, now_s=5.2)
    expected = longest_affordable(Decimal("25.00"), RETAIL_RATES["34"], RETAIL_RATES["2348"], 6)
    assert decision.allowed and decision.max_duration_s == expected
    assert decision.max_duration_s < decide(ALICE, SPAIN).max_duration_s


def test_the_seeds_28_cents_a_minute():
    # seed: Nigeria 20 c/min + Spain 8 c/min = 28 c a minute. With 0.28 in the account, and both legs
    # billed per second here, one minute is exactly affordable and not one second more.
    ref = make_ref()
    ledger(ref, ALICE, "0.28")
    per_second = {
        "234": Rate(prefix="234", rate_per_minute=Decimal("0.20"), increment_s=1),
        "34": Rate(prefix="34", rate_per_minute=Decimal("0.08"), increment_s=1),
    }
    retail = ref.tariffs["retail"].tariff
    rates = [r for r in retail.rates if r.prefix not in ("234", "2348", "34")] + list(per_second.values())
    ref.apply_model("config.tariffs", "retail", retail.model_copy(update={"rates": rates}))
    decision = decide(ALICE, SPAIN, ref, leg_a="2341234567", answered_s=0, now_s=0)
    assert decision.max_duration_s == 60


def test_postpaid_user_may_go_down_to_minus_its_credit_limit():
    assert spendable_balance(DAVE, make_ref(), Decimal("0")) == Decimal("10.00")
    decision = decide(DAVE, SPAIN)  # balance 0, credit limit 10.00
    assert decision.allowed and decision.balance == Decimal("10.00")
    assert decision.max_duration_s == int(Decimal("10.00") * 60 / Decimal("0.08"))  # 7500 s


def test_postpaid_user_at_its_credit_limit_is_refused():
    ref = make_ref()
    ledger(ref, DAVE, "-10.00")
    assert spendable_balance(DAVE, ref, Decimal("0")) == Decimal("0.00")
    assert decide(DAVE, SPAIN, ref).reason == "insufficient_balance"


def test_postpaid_user_near_its_credit_limit_gets_what_is_left():
    ref = make_ref()
    ledger(ref, DAVE, "-9.99")
    decision = decide(DAVE, SPAIN, ref)
    assert decision.balance == Decimal("0.01")
    assert decision.max_duration_s == 7  # 0.01 * 60 / 0.08 = 7.5 s, whole seconds only


def test_prepaid_user_has_no_credit():
    ref = make_ref()
    ref.apply_model(
        CONFIG_USERS.name, "alice", ref.users["alice"].model_copy(update={"credit_limit": Decimal("50")})
    )
    assert spendable_balance(ALICE, ref, Decimal("25.00")) == Decimal("25.00")


def test_the_ledger_balance_wins_over_the_configured_one():
    ref = make_ref()
    ledger(ref, ALICE, "1.00")  # configured: 25.00
    decision = decide(ALICE, SPAIN, ref)
    assert decision.balance == Decimal("1.00")
    assert decision.max_duration_s == int(Decimal("1.00") * 60 / Decimal("0.08"))  # 750 s


def test_the_ledger_of_another_payer_does_not_count():
    ref = make_ref()
    ledger(ref, POOR, "100.00")
    assert decide(ALICE, SPAIN, ref).balance == Decimal("25.00")


def test_a_card_pays_from_its_own_balance_and_tariff():
    decision = decide(THE_CARD, SPAIN)
    assert decision.balance == Decimal("10.00")
    assert decision.rate is not None and decision.rate.rate_per_minute == Decimal("0.10")
    assert decision.max_duration_s == int(Decimal("10.00") * 60 / Decimal("0.10"))  # 6000 s


def test_a_card_has_no_credit_limit_even_if_a_user_shares_its_id():
    ref = make_ref()
    # a postpaid user (credit limit 10.00) whose id is the card's number: users and cards are unrelated
    ref.apply_model(CONFIG_USERS.name, CARD, ref.users["dave"].model_copy(update={"user_id": CARD}))
    assert spendable_balance(Payer(kind=PayerKind.USER, id=CARD), ref, Decimal("0")) == Decimal("10.00")
    assert spendable_balance(THE_CARD, ref, Decimal("10.00")) == Decimal("10.00")


def test_free_destination_without_leg_a_is_unlimited():
    decision = decide(POOR, FREE)
    assert (decision.allowed, decision.max_duration_s) == (True, None)


def test_free_destination_with_a_free_leg_a_is_unlimited():
    decision = decide(ALICE, FREE, leg_a="80099", answered_s=0, now_s=30)
    assert (decision.allowed, decision.max_duration_s) == (True, None)


def test_free_destination_with_a_paid_leg_a_is_limited_by_leg_a():
    decision = decide(ALICE, FREE, leg_a=UK, answered_s=0, now_s=0)  # leg A at 0.03 / min, 1 s increment
    assert decision.allowed
    assert decision.max_duration_s == int(Decimal("25.00") * 60 / Decimal("0.03"))  # 50000 s
