"""Authentication in the IVR: what a caller keyed in, checked against the reference data. Pure.

The seed's three ways, per callback dial plan:

* **Device PIN** (``device_pin``): the PIN names one device; its user is the caller.
* **ANI, then PIN** (``ani_then_pin``): the caller ID already named a device at the initiation;
  the PIN must be that device's.
* **Calling card** number and PIN (``card_number_pin``), or the PIN alone (``card_pin``): the card
  must exist, be active, and (number + PIN) have that PIN.

ANI (``ani``) and pinless cards (``card_pinless``) recognise the caller by caller ID at the
initiation and never ask. Users and cards are unrelated (seed): a card's caller pays with the
card, never with a user's account.

A failure says why (for logs and the session's reason), never which part was wrong to the caller.
A PIN checked against a known device or card (ANI then PIN, card number + PIN) is compared in
constant time; a PIN that names its device or card (device PIN, card PIN alone) is a look-up.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from callback.reference import ReferenceData
from processors.state import Identity
from schemas.callback import Payer, PayerKind
from schemas.reference import AuthMethod, CallingCard, Device


@dataclass(frozen=True)
class AuthFailure:
    reason: str


def authenticate(
    method: AuthMethod,
    pin: str,
    ref: ReferenceData,
    *,
    recognised: Identity | None = None,
    card_number: str | None = None,
) -> Identity | AuthFailure:
    """The caller ``pin`` (and, for ``card_number_pin``, ``card_number``) identifies, or why not."""
    if not pin:
        return AuthFailure("no_pin_entered")
    if method is AuthMethod.DEVICE_PIN:
        devices = ref.devices_by_pin(pin)
        if len(devices) > 1:
            return AuthFailure("ambiguous_pin")
        return _device_caller(devices[0], ref) if devices else AuthFailure("wrong_pin")
    if method is AuthMethod.ANI_THEN_PIN:
        device = ref.devices.get(recognised.device_id or "") if recognised is not None else None
        if device is None or device.pin is None or not _same(device.pin, pin):
            return AuthFailure("wrong_pin")
        return _device_caller(device, ref)
    if method is AuthMethod.CARD_PIN:
        cards = ref.cards_by_pin(pin)
        if len(cards) > 1:
            return AuthFailure("ambiguous_pin")
        return _card_caller(cards[0]) if cards else AuthFailure("wrong_pin")
    if method is AuthMethod.CARD_NUMBER_PIN:
        card = ref.card(card_number or "")
        if card is None or not _same(card.pin, pin):
            return AuthFailure("wrong_card_or_pin")
        return _card_caller(card)
    return AuthFailure(f"{method.value}_asks_no_pin")


def _device_caller(device: Device, ref: ReferenceData) -> Identity | AuthFailure:
    user = ref.users.get(device.user_id)
    if user is None:
        return AuthFailure("wrong_pin")
    if user.blocked or not user.callback_enabled:
        return AuthFailure("user_not_allowed")
    return Identity(
        payer=Payer(kind=PayerKind.USER, id=user.user_id),
        device_id=device.device_id,
        device_cid=device.caller_id,
    )


def _card_caller(card: CallingCard) -> Identity | AuthFailure:
    if not card.active:
        return AuthFailure("card_inactive")
    return Identity(payer=Payer(kind=PayerKind.CARD, id=card.number))


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())
