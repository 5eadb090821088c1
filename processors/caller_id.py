"""Which caller ID a callback leg presents. Pure: the seed's settings (ADDONS -> Callback) decide.

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
Callback CID, then default CID) and logs that it did; this module is the one home of both.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.callback import InitiationOrigin
from schemas.reference import CallbackSettings, CallerIdPolicy


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
