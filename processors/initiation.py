"""Whether an initiation becomes a callback, and on what terms. Pure: reference data in, decision out.

The same function decides for the live processors and for ``callback explain initiation``, so what
the support desk is told is what the pipeline does. Checks, in this order (the first that fails
refuses the initiation, with a stable reason code):

DID initiation (a call to an access number):

1. the DID is configured and has a callback dial plan (``unknown_did`` / ``no_dialplan``);
2. callback settings exist (``not_configured``) and Callback is Active for users (``not_active``);
3. the call has a caller ID (``no_caller_id``: seed, "Without CallerID, you will not be able to use
   Callback");
4. the origin has a rate in the Callback Tariff, the Callback User's tariff, longest prefix of the
   ANI (``origin_not_allowed``; ``no_callback_tariff`` when that tariff is missing);
5. by the dial plan's method: ANI (and ANI then PIN) need a device registered for the ANI
   (``unknown_ani``) whose user may use callback (``user_not_allowed``); a pinless card plan needs a
   card with the ANI as pinless number (``unknown_ani``) that is active (``card_inactive``). A card
   plan recognises a pinless ANI too, and then asks no number or PIN;
6. the fraud guard's blocklist of origin prefixes (``fraud_blocked_prefix``); the counting guards
   (per caller ID and per DID per minute, one live session per caller ID) need state across all
   sessions and are decided by the guard stage (``processors.guard``) after this;
7. the Callback Server is configured (``no_callback_server``).

Web initiation: settings and Active as above; the user exists and may use callback; the user's
tariff has a rate for the number to call back (the user pays leg A); blocklist; Callback Server.

Every DID initiation is dropped with the dial plan's hangup cause, accepted or not: it is never
answered (seed, "Callback Hangup Cause"). A DID without a dial plan is dropped with cause 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from callback.reference import ReferenceData
from processors.callback_settings import UnknownServer, callback_server, settings_for
from processors.guard import GuardLimits
from processors.state import Identity
from schemas.callback import CallbackInitiation, InitiationOrigin, Payer, PayerKind
from schemas.hangup_causes import sip_for_q850
from schemas.reference import AuthMethod, CallbackServer, CallbackSettings, User

#: cause an initiation is dropped with when there is no dial plan to name one: unallocated number
NO_DIALPLAN_CAUSE = 1

#: methods that recognise the caller by caller ID alone, before leg A
ANI_METHODS = frozenset({AuthMethod.ANI, AuthMethod.ANI_THEN_PIN})
CARD_METHODS = frozenset({AuthMethod.CARD_NUMBER_PIN, AuthMethod.CARD_PIN, AuthMethod.CARD_PINLESS})


@dataclass(frozen=True)
class InitiationDecision:
    accepted: bool
    #: stable code ('' when accepted) and words for a person
    reason: str
    detail: str
    #: the Q.850 cause the initiation call is dropped with, and its SIP response (DID only)
    hangup_cause: int | None = None
    auth_method: AuthMethod | None = None
    dialplan_id: str | None = None
    settings: CallbackSettings | None = None
    server: CallbackServer | None = None
    #: the caller, when recognised at the initiation (ANI, pinless card, web user)
    identity: Identity | None = None
    guard: GuardLimits | None = None

    @property
    def sip_code(self) -> int | None:
        return None if self.hangup_cause is None else sip_for_q850(self.hangup_cause)

    @property
    def callback_user(self) -> Payer | None:
        """The Callback User: pays for what no recognised caller pays (seed, "Who pays")."""
        if self.settings is None or self.settings.callback_user_id is None:
            return None
        return Payer(kind=PayerKind.CALLBACK_USER, id=self.settings.callback_user_id)

    @property
    def leg_a_payer(self) -> Payer | None:
        """Who pays leg A as things stand at the initiation: the caller if recognised, else the
        Callback User (a PIN or card caller pays leg A once recognised by the IVR)."""
        if self.identity is not None and not self.needs_authentication:
            return self.identity.payer
        return self.callback_user

    @property
    def needs_authentication(self) -> bool:
        """The IVR asks who is calling: nobody recognised, or ANI then PIN (still asks the PIN)."""
        return self.identity is None or self.auth_method is AuthMethod.ANI_THEN_PIN

    def initiation_payer(self, origin: InitiationOrigin) -> Payer | None:
        """Who pays the initiation call: a caller recognised by ANI or pinless card, else the
        Callback User. A web request has no initiation call."""
        if origin is InitiationOrigin.WEB:
            return None
        return self.identity.payer if self.identity is not None else self.callback_user


def _refuse(reason: str, detail: str, cause: int | None, **known: object) -> InitiationDecision:
    return InitiationDecision(False, reason, detail, hangup_cause=cause, **known)  # type: ignore[arg-type]


def decide_initiation(initiation: CallbackInitiation, ref: ReferenceData) -> InitiationDecision:
    """Accept or refuse ``initiation`` against the reference data, with the reason."""
    if initiation.origin is InitiationOrigin.WEB:
        return _decide_web(initiation, ref)
    return _decide_did(initiation, ref)


def _decide_did(initiation: CallbackInitiation, ref: ReferenceData) -> InitiationDecision:
    did, plan = ref.did_and_dialplan(initiation.did or "")
    if did is None or plan is None:
        # the system settings still name the Callback User, who pays (nothing) for the dropped call
        system = {"settings": settings_for(ref)}
        if did is None:
            return _refuse("unknown_did", f"{initiation.did} is not a configured DID", NO_DIALPLAN_CAUSE,
                           **system)
        return _refuse(
            "no_dialplan",
            f"DID {did.number} names dial plan {did.dialplan_id!r}, which is not configured",
            NO_DIALPLAN_CAUSE,
            **system,
        )
    cause, method = plan.hangup_cause, plan.auth_method
    known: dict[str, object] = {"auth_method": method, "dialplan_id": plan.dialplan_id}
    settings = settings_for(ref, did, plan)
    if settings is None:
        return _refuse("not_configured", "no system callback settings are configured", cause, **known)
    known["settings"] = settings
    if not settings.active_for_users:
        return _refuse("not_active", "Callback is not Active for users", cause, **known)
    ani = initiation.ani
    if ani is None:
        return _refuse("no_caller_id", "the initiation call has no caller ID", cause, **known)
    refusal = _origin_refusal(ani, settings, ref)
    if refusal is not None:
        return _refuse(*refusal, cause, **known)

    identity: Identity | None = None
    if method in ANI_METHODS:
        device = ref.device_by_number(ani)
        user = ref.users.get(device.user_id) if device is not None else None
        if device is None or user is None:
            return _refuse("unknown_ani", f"no device is registered for caller ID {ani}", cause, **known)
        if not _may_use_callback(user):
            return _refuse("user_not_allowed", f"user {user.user_id} may not use callback", cause, **known)
        identity = Identity(
            payer=Payer(kind=PayerKind.USER, id=user.user_id),
            device_id=device.device_id,
            device_cid=device.caller_id,
        )
    elif method in CARD_METHODS:
        card = ref.card_by_pinless(ani)
        if card is None and method is AuthMethod.CARD_PINLESS:
            return _refuse("unknown_ani", f"no calling card has {ani} as pinless number", cause, **known)
        if card is not None:
            if not card.active:
                return _refuse("card_inactive", f"calling card {card.number} is not active", cause, **known)
            identity = Identity(payer=Payer(kind=PayerKind.CARD, id=card.number))
    known["identity"] = identity
    return _finish(ani, settings, ref, cause, known)


def _decide_web(initiation: CallbackInitiation, ref: ReferenceData) -> InitiationDecision:
    settings = settings_for(ref)
    if settings is None:
        return _refuse("not_configured", "no system callback settings are configured", None)
    known: dict[str, object] = {"settings": settings}
    if not settings.active_for_users:
        return _refuse("not_active", "Callback is not Active for users", None, **known)
    user = ref.users.get(initiation.user_id or "")
    if user is None:
        return _refuse("unknown_user", f"user {initiation.user_id} is not configured", None, **known)
    if not _may_use_callback(user):
        return _refuse("user_not_allowed", f"user {user.user_id} may not use callback", None, **known)
    number = initiation.callback_number or ""
    tariff = ref.tariffs.get(user.tariff_id)
    if tariff is None or tariff.index.longest_match(number) is None:
        return _refuse(
            "no_rate_for_callback_number",
            f"tariff {user.tariff_id!r} of user {user.user_id} has no rate for {number}",
            None,
            **known,
        )
    known["identity"] = Identity(payer=Payer(kind=PayerKind.USER, id=user.user_id))
    return _finish(number, settings, ref, None, known)


def _origin_refusal(ani: str, settings: CallbackSettings, ref: ReferenceData) -> tuple[str, str] | None:
    owner = ref.users.get(settings.callback_user_id or "")
    tariff = ref.tariffs.get(owner.tariff_id) if owner is not None else None
    if tariff is None:
        return (
            "no_callback_tariff",
            f"the Callback User {settings.callback_user_id!r} or its tariff (the Callback Tariff) "
            "is not configured",
        )
    if tariff.index.longest_match(ani) is None:
        return "origin_not_allowed", f"the Callback Tariff {tariff.tariff_id!r} has no rate for {ani}"
    return None


def _finish(
    number: str, settings: CallbackSettings, ref: ReferenceData, cause: int | None, known: dict[str, object]
) -> InitiationDecision:
    guard = GuardLimits.from_settings(settings)
    prefix = guard.blocked_prefix(number)
    if prefix is not None:
        detail = f"origin {number} is in blocked prefix {prefix}"
        return _refuse("fraud_blocked_prefix", detail, cause, **known)
    try:
        server = callback_server(settings, ref.servers)
    except UnknownServer as exc:
        return _refuse("no_callback_server", str(exc), cause, **known)
    return InitiationDecision(
        True, "", "accepted", hangup_cause=cause, server=server, guard=guard, **known  # type: ignore[arg-type]
    )


def _may_use_callback(user: User) -> bool:
    return user.callback_enabled and not user.blocked
