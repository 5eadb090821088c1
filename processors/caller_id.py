"""Which caller ID a callback leg presents, and which PBX (Callback Server) places the call.

Pure decisions from the seed's settings (ADDONS -> Callback), unit-tested without a broker.

Caller ID precedence (first that yields a number wins):

1. **Send Device CID** and the caller is recognised with a device that has a CID -> the device CID.
   Before authentication (leg A of a PIN callback) no device is known, so this falls through.
2. **Send Source as CID** -> for a DID initiation, the source (the initiator's ANI); for a web
   callback, the **WEB Callback CID**, or, when that is empty, the default CID (seed: "If it is left
   empty default CID will be used").
3. **Callback CID** ("send another CallerID") when set.
4. The default CID when set; otherwise ``None``: the PBX presents its own default.

Who applies it: the processors know the session (origin, ANI, recognised device) and put the chosen
number into ``Originate.caller_id_num`` / ``DialLegB.caller_id_num``. The originator has no session
context, so for a command without one it applies only the context-free tail (:func:`fallback_caller_id`:
Callback CID, then default CID) and logs that it did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from schemas.callback import InitiationOrigin
from schemas.reference import CallbackServer, CallbackSettings, CallerIdPolicy


@dataclass(frozen=True)
class CidDecision:
    number: str | None
    policy: CallerIdPolicy
    reason: str


def choose_caller_id(
    settings: CallbackSettings, *, origin: InitiationOrigin | None, source: str | None, device_cid: str | None
) -> CidDecision:
    """The caller ID for a callback leg under ``settings`` (already overlaid for the DID / dial plan)."""
    if settings.send_device_cid and device_cid:
        return CidDecision(device_cid, CallerIdPolicy.DEVICE, "Send Device CID: recognised device's CID")
    if settings.send_source_as_cid:
        if origin is InitiationOrigin.WEB:
            if settings.web_callback_cid:
                return CidDecision(
                    settings.web_callback_cid,
                    CallerIdPolicy.SOURCE,
                    "Send Source as CID, web callback: WEB Callback CID",
                )
            return CidDecision(
                settings.default_cid,
                CallerIdPolicy.DEFAULT,
                "Send Source as CID, web callback, WEB Callback CID empty: default CID",
            )
        if source:
            return CidDecision(source, CallerIdPolicy.SOURCE, "Send Source as CID: the initiator's number")
    return fallback_caller_id(settings)


def fallback_caller_id(settings: CallbackSettings) -> CidDecision:
    """The part of the policy that needs no session: Callback CID, else default CID, else PBX default."""
    if settings.callback_cid:
        return CidDecision(settings.callback_cid, CallerIdPolicy.CALLBACK_CID, "Callback CID")
    if settings.default_cid:
        return CidDecision(settings.default_cid, CallerIdPolicy.DEFAULT, "default CID")
    return CidDecision(None, CallerIdPolicy.DEFAULT, "no CID configured: the PBX's default")


class UnknownServer(LookupError):
    """The settings name a Callback Server that is not configured."""


def effective_settings(system: CallbackSettings, *overrides: CallbackSettings | None) -> CallbackSettings:
    """System settings with each scope's overrides applied in order (dial plan, then DID)."""
    settings = system
    for override in overrides:
        settings = settings.overlay(override)
    return settings


def callback_server(settings: CallbackSettings, servers: Mapping[str, CallbackServer]) -> CallbackServer:
    """The PBX that gets the callback: the **Callback Server** setting, among the configured servers."""
    server_id = settings.callback_server_id
    if server_id is None:
        raise UnknownServer("no Callback Server set in the callback settings")
    try:
        return servers[server_id]
    except KeyError:
        raise UnknownServer(
            f"Callback Server {server_id!r} is not among the configured servers "
            f"({', '.join(sorted(servers)) or 'none'})"
        ) from None
