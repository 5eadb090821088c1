"""PBX commands -> the AMI actions that execute them (pure; the originator sends them in order).

* ``pbx.originate`` -> ``Originate`` with ``Async: true`` (the reply is immediate; the outcome comes as
  an ``OriginateResponse`` event, which the AMI producer reports), ``ChannelId`` derived from the
  command id, ``Timeout`` = Wait Time in ms, ``CallerID`` from the command or the CID fallback, and
  the variables ``CALLBACK_ID``, ``LEG``, ``ATTEMPT`` (``manager.conf`` ``channelvars`` must list them,
  so every later event of the channel names its callback).
* ``pbx.hangup`` -> ``Hangup`` with the dial plan's Q.850 ``Cause``.
* ``pbx.redirect`` -> ``Redirect`` to the IVR context (PIN, destination, Busy IVR, Failed IVR).
* ``pbx.dial_b`` -> ``Setvar`` of the limits on leg A, then ``Redirect`` of leg A to the dial context
  with the destination as extension; the dialplan Dial()s it and bridges.
* ``pbx.setvar`` -> ``Setvar``.
"""

from __future__ import annotations

from typing import Any

from producers.action_ids import ActionRef, channel_id_for, encode_action_id
from schemas.pbx_commands import DialLegB, Hangup, Originate, PbxCommand, Redirect, SetVar

AmiAction = dict[str, Any]

#: channel variable the dial context reads to cap leg B (like Dial's S() / L() option)
MAX_SECONDS_VAR = "CALLBACK_MAX_SECONDS"
DIAL_TIMEOUT_VAR = "CALLBACK_DIAL_TIMEOUT"


def _action_id(cmd: PbxCommand, leg: str, attempt: int, step: int) -> str:
    command_id = cmd.command_id if step == 0 else f"{cmd.command_id}#{step}"
    return encode_action_id(ActionRef(cmd.callback_id, leg, attempt, command_id))


def caller_id_header(number: str | None, name: str | None) -> str | None:
    if number is None:
        return None
    return f'"{name}" <{number}>' if name else f"<{number}>"


def actions_for(cmd: PbxCommand, *, fallback_cid: str | None = None) -> list[AmiAction]:
    """The AMI actions for one command, in the order they must be sent."""
    if isinstance(cmd, Originate):
        variables = {
            "CALLBACK_ID": cmd.callback_id,
            "LEG": cmd.leg.value.upper(),
            "ATTEMPT": str(cmd.attempt),
        }
        variables.update(cmd.variables)
        action: AmiAction = {
            "Action": "Originate",
            "ActionID": _action_id(cmd, cmd.leg.value, cmd.attempt, 0),
            "Channel": cmd.channel,
            "Context": cmd.context,
            "Exten": cmd.exten,
            "Priority": str(cmd.priority),
            "Timeout": str(cmd.timeout_ms),
            "Async": "true",
            "ChannelId": channel_id_for(cmd.command_id),
            "Variable": [f"{k}={v}" for k, v in variables.items()],
        }
        cid = caller_id_header(cmd.caller_id_num or fallback_cid, cmd.caller_id_name)
        if cid:
            action["CallerID"] = cid
        return [action]
    if isinstance(cmd, Hangup):
        return [
            {
                "Action": "Hangup",
                "ActionID": _action_id(cmd, "initiation", 0, 0),
                "Channel": cmd.channel,
                "Cause": str(cmd.cause),
            }
        ]
    if isinstance(cmd, Redirect):
        return [
            {
                "Action": "Redirect",
                "ActionID": _action_id(cmd, "a", 0, 0),
                "Channel": cmd.channel,
                "Context": cmd.context,
                "Exten": cmd.exten,
                "Priority": str(cmd.priority),
            }
        ]
    if isinstance(cmd, SetVar):
        return [
            {
                "Action": "Setvar",
                "ActionID": _action_id(cmd, "a", 0, 0),
                "Channel": cmd.channel,
                "Variable": cmd.variable,
                "Value": cmd.value,
            }
        ]
    if isinstance(cmd, DialLegB):
        steps: list[AmiAction] = []
        settings = {DIAL_TIMEOUT_VAR: str(cmd.timeout_s)}
        if cmd.max_duration_s is not None:
            settings[MAX_SECONDS_VAR] = str(cmd.max_duration_s)
        if cmd.caller_id_num:
            settings["CALLERID(num)"] = cmd.caller_id_num
        for name, value in settings.items():
            steps.append(
                {
                    "Action": "Setvar",
                    "ActionID": _action_id(cmd, "b", cmd.attempt, len(steps) + 1),
                    "Channel": cmd.a_channel,
                    "Variable": name,
                    "Value": value,
                }
            )
        steps.append(
            {
                "Action": "Redirect",
                "ActionID": _action_id(cmd, "b", cmd.attempt, 0),
                "Channel": cmd.a_channel,
                "Context": cmd.context,
                "Exten": cmd.number,
                "Priority": "1",
            }
        )
        return steps
    raise TypeError(f"no AMI mapping for {type(cmd).__name__}")
