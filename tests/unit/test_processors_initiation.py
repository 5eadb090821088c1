"""``processors.initiation.decide_initiation``: every refusal reason, every acceptance, who pays, the
hangup cause, and the order in which the callback settings are overlaid. Pure: no servers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from processors.callback_settings import settings_for
from processors.guard import DEFAULT_BLOCKED_PREFIXES
from processors.initiation import decide_initiation
from schemas.callback import InitiationOrigin, Payer, PayerKind
from schemas.hangup_causes import sip_for_q850
from schemas.reference import AuthMethod, CallbackSettings, Rate, Tariff, User
from schemas.topics import CONFIG_DIALPLANS, CONFIG_SERVERS, CONFIG_TARIFFS, CONFIG_USERS
from tests.unit.processors_helpers import (
    ALICE_ANI,
    BOB_ANI,
    CAROL_ANI,
    CAUSES,
    DEAD_CARD_ANI,
    DID_ANI,
    DID_ANI_PIN,
    DID_CARD_NUMBER,
    DID_CARD_PIN,
    DID_NO_PLAN,
    DID_PIN,
    DID_PINLESS,
    INMARSAT_ANI,
    OWNER,
    PINLESS_ANI,
    PINLESS_CARD,
    SERVER_ID,
    STRANGER_ANI,
    UK,
    UK_ANI,
    base_settings,
    did_initiation,
    make_ref,
    put_dialplan,
    put_did,
    put_settings,
    web_initiation,
)

CALLBACK_USER = Payer(kind=PayerKind.CALLBACK_USER, id=OWNER)
ALICE = Payer(kind=PayerKind.USER, id="alice")


def decide(did: str, ani: str | None, ref=None):
    return decide_initiation(did_initiation(did, ani), ref if ref is not None else make_ref())


def assert_refused(decision, reason: str) -> None:
    assert not decision.accepted
    assert decision.reason == reason, decision.detail
    assert decision.server is None  # a refusal never names where to call back


# --- refusals, in the docstring's order -----------------------------------------------------------


def test_unknown_did_is_refused_with_cause_1():
    decision = decide("2349111111111", ALICE_ANI)
    assert_refused(decision, "unknown_did")
    assert (decision.hangup_cause, decision.sip_code) == (1, 404)


def test_did_whose_dialplan_is_missing_is_refused_with_cause_1():
    decision = decide(DID_NO_PLAN, ALICE_ANI)
    assert_refused(decision, "no_dialplan")
    assert (decision.hangup_cause, decision.sip_code) == (1, 404)


def test_no_system_settings_is_not_configured():
    decision = decide(DID_PIN, ALICE_ANI, make_ref(with_settings=False))
    assert_refused(decision, "not_configured")
    assert decision.hangup_cause == 17  # the dial plan is known: its cause, not 1


def test_callback_not_active_for_users_is_refused():
    decision = decide(DID_PIN, ALICE_ANI, make_ref(base_settings(active_for_users=False)))
    assert_refused(decision, "not_active")


def test_a_did_override_can_switch_callback_off_for_that_did_only():
    ref = make_ref()
    put_settings(ref, CallbackSettings(scope=f"did:{DID_PIN}", active_for_users=False))
    assert_refused(decide(DID_PIN, ALICE_ANI, ref), "not_active")
    assert decide(DID_ANI, ALICE_ANI, ref).accepted


def test_withheld_caller_id_is_refused_no_caller_id():
    decision = decide(DID_PIN, None)
    assert_refused(decision, "no_caller_id")
    assert (decision.hangup_cause, decision.sip_code) == (17, 486)


def test_missing_callback_user_is_no_callback_tariff():
    decision = decide(DID_PIN, ALICE_ANI, make_ref(base_settings(callback_user_id="nobody")))
    assert_refused(decision, "no_callback_tariff")


def test_callback_user_whose_tariff_is_missing_is_no_callback_tariff():
    ref = make_ref()
    ref.apply_model(CONFIG_TARIFFS.name, "origins", None)  # tombstone of the Callback Tariff
    assert_refused(decide(DID_PIN, ALICE_ANI, ref), "no_callback_tariff")


def test_origin_without_rate_in_callback_tariff_is_refused():
    assert_refused(decide(DID_PIN, UK_ANI), "origin_not_allowed")


def test_origin_sharing_only_part_of_a_prefix_is_refused():
    # the Callback Tariff has 234; 235... shares "23" only
    assert_refused(decide(DID_PIN, "2351234567"), "origin_not_allowed")


def test_origin_is_matched_by_longest_prefix_not_exact_number():
    # 2348031234567 is allowed by the 234 rate
    assert decide(DID_PIN, ALICE_ANI).accepted


def test_callback_tariff_is_the_callback_users_tariff():
    ref = make_ref()
    # the owner's tariff, not alice's retail tariff (which rates 44), decides the origins
    assert_refused(decide(DID_PIN, UK_ANI, ref), "origin_not_allowed")
    owner = ref.users[OWNER].model_copy(update={"tariff_id": "retail"})
    ref.apply_model(CONFIG_USERS.name, OWNER, owner)
    assert decide(DID_PIN, UK_ANI, ref).accepted


def test_callback_tariff_follows_the_callback_user_setting():
    ref = make_ref()
    ref.apply_model(
        CONFIG_TARIFFS.name,
        "uk-only",
        Tariff(tariff_id="uk-only", rates=[Rate(prefix="44", rate_per_minute=Decimal("0.01"))]),
    )
    ref.apply_model(CONFIG_USERS.name, "owner2", User(user_id="owner2", name="Owner 2", tariff_id="uk-only"))
    put_settings(ref, base_settings(callback_user_id="owner2"))
    assert decide(DID_PIN, UK_ANI, ref).accepted
    assert_refused(decide(DID_PIN, ALICE_ANI, ref), "origin_not_allowed")


@pytest.mark.parametrize("did", [DID_ANI, DID_ANI_PIN])
def test_ani_plans_refuse_an_unregistered_caller_id(did):
    assert_refused(decide(did, STRANGER_ANI), "unknown_ani")


def test_pinless_plan_refuses_a_caller_id_no_card_lists():
    assert_refused(decide(DID_PINLESS, STRANGER_ANI), "unknown_ani")


def test_device_pin_plan_does_not_need_a_registered_caller_id():
    decision = decide(DID_PIN, STRANGER_ANI)
    assert decision.accepted
    assert decision.identity is None


@pytest.mark.parametrize("did", [DID_ANI, DID_ANI_PIN])
@pytest.mark.parametrize("ani", [BOB_ANI, CAROL_ANI], ids=["blocked", "callback_disabled"])
def test_ani_of_a_user_who_may_not_use_callback_is_refused(did, ani):
    assert_refused(decide(did, ani), "user_not_allowed")


@pytest.mark.parametrize("did", [DID_PINLESS, DID_CARD_NUMBER, DID_CARD_PIN])
def test_pinless_ani_of_an_inactive_card_is_refused(did):
    assert_refused(decide(did, DEAD_CARD_ANI), "card_inactive")


def test_inmarsat_origin_is_blocked_by_default_even_with_a_rate():
    assert "870" in DEFAULT_BLOCKED_PREFIXES
    ref = make_ref()
    assert ref.tariffs["origins"].index.longest_match(INMARSAT_ANI) is not None  # the tariff would allow it
    decision = decide(DID_PIN, INMARSAT_ANI, ref)
    assert_refused(decision, "fraud_blocked_prefix")
    assert "870" in decision.detail


def test_a_dialplan_override_can_clear_the_blocklist():
    ref = make_ref()
    put_dialplan(
        ref,
        "dp-pin",
        AuthMethod.DEVICE_PIN,
        17,
        settings=CallbackSettings(scope="dialplan:dp-pin", blocked_origin_prefixes=[]),
    )
    assert decide(DID_PIN, INMARSAT_ANI, ref).accepted
    assert_refused(decide(DID_CARD_NUMBER, INMARSAT_ANI, ref), "fraud_blocked_prefix")  # other plans keep it


def test_a_custom_blocklist_replaces_the_default():
    ref = make_ref(base_settings(blocked_origin_prefixes=["23480"]))
    assert_refused(decide(DID_PIN, ALICE_ANI, ref), "fraud_blocked_prefix")
    assert decide(DID_PIN, INMARSAT_ANI, ref).accepted


def test_unknown_callback_server_is_refused():
    decision = decide(DID_PIN, ALICE_ANI, make_ref(base_settings(callback_server_id="pbx9")))
    assert_refused(decision, "no_callback_server")
    assert "pbx9" in decision.detail


def test_deleted_callback_server_is_refused():
    ref = make_ref()
    ref.apply_model(CONFIG_SERVERS.name, SERVER_ID, None)
    assert_refused(decide(DID_PIN, ALICE_ANI, ref), "no_callback_server")


def test_checks_run_in_the_documented_order():
    # not active AND withheld caller ID AND unknown server: the first check in the list wins
    ref = make_ref(base_settings(active_for_users=False, callback_server_id="pbx9"))
    assert decide(DID_PIN, None, ref).reason == "not_active"
    ref = make_ref(base_settings(callback_server_id="pbx9"))
    assert decide(DID_PIN, None, ref).reason == "no_caller_id"
    assert decide(DID_PIN, UK_ANI, ref).reason == "origin_not_allowed"
    assert decide(DID_ANI, STRANGER_ANI, ref).reason == "unknown_ani"
    assert decide(DID_PIN, INMARSAT_ANI, ref).reason == "fraud_blocked_prefix"
    assert decide(DID_PIN, ALICE_ANI, ref).reason == "no_callback_server"


# --- acceptances and who pays ---------------------------------------------------------------------


def test_device_pin_is_accepted_unrecognised_and_the_callback_user_pays():
    decision = decide(DID_PIN, STRANGER_ANI)
    assert decision.accepted and decision.reason == ""
    assert decision.auth_method is AuthMethod.DEVICE_PIN
    assert decision.needs_authentication
    assert decision.identity is None
    assert decision.leg_a_payer == CALLBACK_USER
    assert decision.initiation_payer(InitiationOrigin.DID) == CALLBACK_USER
    assert decision.server is not None and decision.server.server_id == SERVER_ID


def test_device_pin_does_not_recognise_even_a_registered_ani():
    decision = decide(DID_PIN, ALICE_ANI)
    assert decision.identity is None
    assert decision.leg_a_payer == CALLBACK_USER


def test_ani_recognises_the_user_who_pays_leg_a_and_the_initiation():
    decision = decide(DID_ANI, ALICE_ANI)
    assert decision.accepted
    assert decision.auth_method is AuthMethod.ANI
    assert not decision.needs_authentication
    assert decision.identity is not None
    assert decision.identity.device_id == "alice-mobile"
    assert decision.identity.device_cid == "2348031230000"
    assert decision.leg_a_payer == ALICE
    assert decision.initiation_payer(InitiationOrigin.DID) == ALICE


def test_ani_then_pin_recognises_the_user_for_the_initiation_but_still_asks_the_pin():
    decision = decide(DID_ANI_PIN, ALICE_ANI)
    assert decision.accepted
    assert decision.identity is not None and decision.identity.device_id == "alice-mobile"
    assert decision.initiation_payer(InitiationOrigin.DID) == ALICE  # seed: ANI/PIN pays the initiation
    # the PIN is still asked, and until then leg A is the Callback User's (as the session does)
    assert decision.needs_authentication
    assert decision.leg_a_payer == CALLBACK_USER


@pytest.mark.parametrize("did", [DID_PINLESS, DID_CARD_NUMBER, DID_CARD_PIN])
def test_card_plans_recognise_a_pinless_ani_and_need_no_authentication(did):
    decision = decide(did, PINLESS_ANI)
    assert decision.accepted
    card = Payer(kind=PayerKind.CARD, id=PINLESS_CARD)
    assert decision.identity is not None and decision.identity.payer == card
    assert not decision.needs_authentication
    assert decision.leg_a_payer == card
    assert decision.initiation_payer(InitiationOrigin.DID) == card


@pytest.mark.parametrize("did", [DID_CARD_NUMBER, DID_CARD_PIN])
def test_card_plan_without_pinless_ani_needs_authentication(did):
    decision = decide(did, STRANGER_ANI)
    assert decision.accepted
    assert decision.identity is None
    assert decision.needs_authentication
    assert decision.leg_a_payer == CALLBACK_USER
    assert decision.initiation_payer(InitiationOrigin.DID) == CALLBACK_USER


def test_web_callback_user_pays_and_has_no_initiation_call():
    decision = decide_initiation(web_initiation("alice", UK), make_ref())
    assert decision.accepted
    assert decision.identity is not None and decision.identity.payer == ALICE
    assert decision.leg_a_payer == ALICE
    assert not decision.needs_authentication
    assert decision.initiation_payer(InitiationOrigin.WEB) is None
    assert decision.hangup_cause is None and decision.sip_code is None


def test_web_callback_number_without_rate_in_the_users_tariff_is_refused():
    # 1... is in the Callback Tariff but not in alice's retail tariff: the user's tariff decides
    assert_refused(
        decide_initiation(web_initiation("alice", "12125550142"), make_ref()), "no_rate_for_callback_number"
    )


def test_web_callback_of_an_unknown_user_is_refused():
    assert_refused(decide_initiation(web_initiation("mallory", UK), make_ref()), "unknown_user")


@pytest.mark.parametrize("user", ["bob", "carol"])
def test_web_callback_of_a_user_who_may_not_use_callback_is_refused(user):
    assert_refused(decide_initiation(web_initiation(user, UK), make_ref()), "user_not_allowed")


def test_web_callback_to_a_blocked_prefix_is_refused():
    ref = make_ref()
    retail = ref.tariffs["retail"].tariff
    rates = [*retail.rates, Rate(prefix="870", rate_per_minute=Decimal("9"))]
    ref.apply_model(CONFIG_TARIFFS.name, "retail", retail.model_copy(update={"rates": rates}))
    assert_refused(decide_initiation(web_initiation("alice", INMARSAT_ANI), ref), "fraud_blocked_prefix")


def test_web_callback_when_not_active_is_refused():
    ref = make_ref(base_settings(active_for_users=False))
    assert_refused(decide_initiation(web_initiation("alice", UK), ref), "not_active")


# --- hangup cause ---------------------------------------------------------------------------------


@pytest.mark.parametrize("did", sorted(CAUSES))
def test_initiation_is_dropped_with_the_dialplans_cause_and_its_sip_code(did):
    cause, sip = CAUSES[did]
    accepted = decide(did, PINLESS_ANI if did in (DID_PINLESS,) else ALICE_ANI)
    refused = decide(did, None)
    for decision in (accepted, refused):
        assert decision.hangup_cause == cause
        assert decision.sip_code == sip == sip_for_q850(cause)
    assert accepted.accepted and not refused.accepted


def test_changing_the_dialplans_cause_changes_the_drop():
    ref = make_ref()
    put_dialplan(ref, "dp-pin", AuthMethod.DEVICE_PIN, 28)
    decision = decide(DID_PIN, ALICE_ANI, ref)
    assert (decision.hangup_cause, decision.sip_code) == (28, 484)


# --- settings overlay order -----------------------------------------------------------------------


def _layered_ref():
    ref = make_ref(base_settings(wait_time_s=25, retry_time_s=20, max_retries=2, pin_attempts=3))
    put_dialplan(
        ref,
        "dp-layers",
        AuthMethod.DEVICE_PIN,
        17,
        settings=CallbackSettings(scope="dialplan:dp-layers", wait_time_s=40, retry_time_s=50),
    )
    put_did(
        ref,
        "2349000000077",
        "dp-layers",
        settings=CallbackSettings(scope="did:2349000000077", wait_time_s=60),
    )
    return ref


def test_settings_overlay_system_then_dialplan_then_did():
    ref = _layered_ref()
    settings = decide("2349000000077", ALICE_ANI, ref).settings
    assert settings is not None
    assert settings.wait_time_s == 60  # the DID's override wins over the dial plan's 40
    assert settings.retry_time_s == 50  # the dial plan's override wins over the system's 20
    assert settings.max_retries == 2  # inherited from the system
    assert settings.scope == "system"


def test_settings_without_did_override_take_the_dialplans():
    ref = _layered_ref()
    put_did(ref, "2349000000078", "dp-layers")
    settings = decide("2349000000078", ALICE_ANI, ref).settings
    assert settings is not None and settings.wait_time_s == 40


def test_settings_records_follow_the_embedded_overrides_of_their_scope():
    ref = _layered_ref()
    # a config.callback_settings dialplan: record applies after the plan's own settings ...
    put_settings(ref, CallbackSettings(scope="dialplan:dp-layers", retry_time_s=70, wait_time_s=45))
    # ... and a did: record after the DID's own
    put_settings(ref, CallbackSettings(scope="did:2349000000077", wait_time_s=90))
    did, plan = ref.did_and_dialplan("2349000000077")
    settings = settings_for(ref, did, plan)
    assert settings is not None
    assert (settings.retry_time_s, settings.wait_time_s) == (70, 90)
    # the plan record does not beat the DID's embedded override
    ref.apply_model("config.callback_settings", "did:2349000000077", None)
    settings = settings_for(ref, did, plan)
    assert settings is not None and settings.wait_time_s == 60


def test_web_settings_are_the_system_ones_only():
    ref = _layered_ref()
    assert settings_for(ref) == ref.system_settings()
    decision = decide_initiation(web_initiation("alice", UK), ref)
    assert decision.settings is not None and decision.settings.wait_time_s == 25


def test_override_sets_only_what_it_names():
    ref = _layered_ref()
    settings = decide("2349000000077", ALICE_ANI, ref).settings
    system = ref.system_settings()
    assert settings is not None and system is not None
    unchanged = set(CallbackSettings.model_fields) - {"wait_time_s", "retry_time_s"}
    for name in unchanged:
        assert getattr(settings, name) == getattr(system, name), name


def test_deleted_dialplan_is_no_dialplan():
    ref = make_ref()
    ref.apply_model(CONFIG_DIALPLANS.name, "dp-pin", None)
    assert_refused(decide(DID_PIN, ALICE_ANI, ref), "no_dialplan")
