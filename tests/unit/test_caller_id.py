"""Caller ID policy and Callback Server choice (seed settings), pure."""

from __future__ import annotations

import pytest

from processors.callback_settings import UnknownServer, callback_server, effective_settings
from processors.caller_id import choose_caller_id, fallback_caller_id
from schemas.callback import InitiationOrigin
from schemas.reference import CallbackServer, CallbackSettings, CallerIdPolicy
from tests.factories import system_settings

SYSTEM = system_settings(default_cid="18005550100")


def s(**changes) -> CallbackSettings:
    return SYSTEM.model_copy(update=changes)


DID, WEB = InitiationOrigin.DID, InitiationOrigin.WEB


@pytest.mark.parametrize(
    "settings,origin,source,device,expected",
    [
        (s(send_device_cid=True), DID, "234801", "15550001", ("15550001", CallerIdPolicy.DEVICE)),
        # device CID unknown (not authenticated yet) -> falls through to the next rule
        (s(send_device_cid=True), DID, "234801", None, ("18005550100", CallerIdPolicy.DEFAULT)),
        (
            s(send_device_cid=True, send_source_as_cid=True),
            DID,
            "234801",
            None,
            ("234801", CallerIdPolicy.SOURCE),
        ),
        (s(send_source_as_cid=True), DID, "234801", "15550001", ("234801", CallerIdPolicy.SOURCE)),
        (
            s(send_source_as_cid=True, web_callback_cid="18005550111"),
            WEB,
            "234801",
            None,
            ("18005550111", CallerIdPolicy.SOURCE),
        ),
        (s(send_source_as_cid=True), WEB, "234801", None, ("18005550100", CallerIdPolicy.DEFAULT)),
        (
            s(send_source_as_cid=True),
            DID,
            None,
            None,
            ("18005550100", CallerIdPolicy.DEFAULT),
        ),  # withheld ANI
        (
            s(callback_cid="442070000000"),
            DID,
            "234801",
            "15550001",
            ("442070000000", CallerIdPolicy.CALLBACK_CID),
        ),
        (s(default_cid=None), DID, "234801", None, (None, CallerIdPolicy.DEFAULT)),
    ],
)
def test_caller_id_precedence(settings, origin, source, device, expected):
    d = choose_caller_id(settings, origin=origin, source=source, device_cid=device)
    assert (d.number, d.policy) == expected and d.reason


def test_originator_fallback_uses_only_context_free_settings():
    assert fallback_caller_id(s(send_device_cid=True, callback_cid="44")).number == "44"
    assert fallback_caller_id(s()).number == "18005550100"


def test_callback_server_follows_the_most_specific_setting():
    servers = {
        sid: CallbackServer(server_id=sid, ami_host="h", ami_username="u", ami_secret="x")
        for sid in ("pbx1", "pbx2")
    }
    dialplan = CallbackSettings(scope="dialplan:cb-ani", callback_server_id="pbx2")
    did = CallbackSettings(scope="did:18005550199", wait_time_s=45)
    assert callback_server(effective_settings(SYSTEM, dialplan, did), servers).server_id == "pbx2"
    assert callback_server(effective_settings(SYSTEM, None, did), servers).server_id == "pbx1"
    with pytest.raises(UnknownServer, match="pbx9"):
        callback_server(s(callback_server_id="pbx9"), servers)
