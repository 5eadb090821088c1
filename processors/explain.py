"""``callback explain initiation``: the live initiation decision, run on a carrier file, explained.

For the carrier's support desk: "why was this caller not called back?" The answer comes from
``processors.initiation.decide_initiation``, the very function the processors run, on the
reference data of a carrier YAML file, so it cannot drift from what the pipeline does. Only the
counting fraud guards (per minute, one live session) are not evaluated: they depend on the traffic
of the moment, which a file does not have; the answer lists their limits instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from callback.reference import ReferenceData
from processors.initiation import decide_initiation
from producers.ami_fields import normalize_number
from schemas.callback import CallbackInitiation, InitiationOrigin, Payer
from schemas.carrier_config import CarrierConfig


def _payer(payer: Payer | None) -> dict[str, str] | None:
    return None if payer is None else {"kind": payer.kind.value, "id": payer.id}


def explain_did_initiation(
    carrier: CarrierConfig, *, did: str, ani: str | None, at: datetime
) -> dict[str, Any]:
    """The decision for a call from ``ani`` (None: withheld) to access number ``did``, as a dict."""
    did_number = normalize_number(did)
    if did_number is None:
        raise ValueError(f"--did {did!r} is not a phone number (digits, optionally with a leading +)")
    ani_number = normalize_number(ani) if ani is not None else None
    if ani is not None and ani_number is None:
        raise ValueError(f"--ani {ani!r} is not a phone number (leave --ani out for a withheld caller ID)")
    ref = ReferenceData.from_carrier_config(carrier)
    did_record, _plan = ref.did_and_dialplan(did_number)
    initiation = CallbackInitiation(
        source="explain",
        callback_id="explain",
        origin=InitiationOrigin.DID,
        ani=ani_number,
        did=did_number,
        pbx_id=(did_record.pbx_id if did_record is not None else None) or "explain",
        channel="explain",
        callback_number=ani_number,
        received_at=at,
    )
    decision = decide_initiation(initiation, ref)
    guard = decision.guard
    return {
        "decision": "accepted" if decision.accepted else "refused",
        "reason": decision.reason or None,
        "detail": decision.detail,
        "did": did_number,
        "ani": ani_number,
        "dialplan_id": decision.dialplan_id,
        "hangup_cause": decision.hangup_cause,
        "sip_code": decision.sip_code,
        "auth_method": decision.auth_method.value if decision.auth_method is not None else None,
        "needs_authentication": decision.accepted and decision.needs_authentication,
        "callback_server": decision.server.server_id if decision.server is not None else None,
        "leg_a_payer": _payer(decision.leg_a_payer) if decision.accepted else None,
        "initiation_payer": _payer(decision.initiation_payer(InitiationOrigin.DID)),
        "fraud_limits_not_evaluated": None
        if guard is None
        else {
            "max_initiations_per_ani_per_minute": guard.per_number_per_minute,
            "max_initiations_per_did_per_minute": guard.per_did_per_minute,
            "one_live_session_per_ani": guard.one_live_session,
        },
    }


def render(answer: dict[str, Any]) -> str:
    """The answer for a person: one fact per line."""

    def payer(p: dict[str, str] | None) -> str:
        return "-" if p is None else f"{p['kind']} {p['id']}"

    cause = answer["hangup_cause"]
    lines = [
        f"call from {answer['ani'] or '(no caller ID)'} to {answer['did']}: {answer['decision'].upper()}",
        f"  reason:            {answer['reason'] or '-'} ({answer['detail']})",
        f"  dial plan:         {answer['dialplan_id'] or '-'} (auth: {answer['auth_method'] or '-'})",
        f"  initiation hangup: Q.850 {cause} / SIP {answer['sip_code']}" if cause is not None
        else "  initiation hangup: -",
        f"  initiation paid by {payer(answer['initiation_payer'])}",
    ]
    if answer["decision"] == "accepted":
        lines += [
            f"  callback server:   {answer['callback_server']}",
            f"  leg A paid by      {payer(answer['leg_a_payer'])}"
            + ("  (until the caller is recognised in the IVR)" if answer["needs_authentication"] else ""),
        ]
        limits = answer["fraud_limits_not_evaluated"]
        if limits:
            lines.append(
                "  fraud limits (depend on live traffic, not evaluated): "
                + ", ".join(f"{k}={v}" for k, v in limits.items())
            )
    return "\n".join(lines)
