"""AMI actions: validate a client's request, answer it the way Asterisk 18 answers, act on the PBX.

Each handler returns an :class:`Outcome`: the responses to write to the requesting
session now, an optional ``effect`` run right after they are written (so a Hangup's
response precedes its Hangup event, and Originate's "queued" response precedes the call
events and the OriginateResponse, which panoramisk relies on), and whether to close the
connection. Response texts are Asterisk's (``manager.c``), because clients match on them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from infra.pbx_sim.channels import InvalidChannel, parse_dial_target
from infra.pbx_sim.pbx import OriginateRequest, OriginateResult, Pbx
from infra.pbx_sim.protocol import Header, Message

EVENT_CLASSES = (
    "system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf",
    "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc", "test", "security", "message",
)  # fmt: skip
_TRUE = {"yes", "true", "y", "t", "1", "on"}
_FALSE = {"no", "false", "n", "f", "0", "off"}
_UNAUTHENTICATED_OK = {"login", "logoff", "challenge"}


def is_true(value: str | None) -> bool:
    """Asterisk's ``ast_true``."""
    return (value or "").strip().lower() in _TRUE


def parse_event_mask(value: str | None) -> frozenset[str]:
    """``Events:`` / ``EventMask:`` value -> the set of event classes the session receives."""
    text = (value or "").strip().lower()
    if not text or text in _TRUE or text == "all":
        return frozenset(EVENT_CLASSES)
    if text in _FALSE or text == "none":
        return frozenset()
    wanted = {part.strip() for part in text.split(",")}
    if "all" in wanted:
        return frozenset(EVENT_CLASSES)
    return frozenset(wanted & set(EVENT_CLASSES))


@dataclass
class Session:
    """What Asterisk keeps per manager connection."""

    peer: str
    authenticated: bool = False
    username: str | None = None
    event_mask: frozenset[str] = field(default_factory=lambda: frozenset(EVENT_CLASSES))
    challenge: str | None = None

    def wants(self, category: str) -> bool:
        return self.authenticated and category in self.event_mask


@dataclass
class Outcome:
    replies: list[list[Header]] = field(default_factory=list)
    effect: Callable[[], None] | None = None
    close: bool = False


@dataclass
class ActionContext:
    """Everything a handler may touch: the session, the PBX, the credentials, the clock."""

    session: Session
    pbx: Pbx
    credentials: dict[str, str]
    uptime: Callable[[], float]
    #: writes a message to this session later (sync Originate answers when the call resolves)
    send: Callable[[list[Header]], None]


def response(
    msg: Message, status: str, message: str | None = None, extra: list[Header] | None = None
) -> list[Header]:
    """``astman_send_response_full``: Response, ActionID (echoed), Message, then any extra lines."""
    headers: list[Header] = [("Response", status)]
    action_id = msg.get("ActionID")
    if action_id is not None:
        headers.append(("ActionID", action_id))
    if message is not None:
        headers.append(("Message", message))
    headers.extend(extra or [])
    return headers


def _error(msg: Message, text: str) -> Outcome:
    return Outcome([response(msg, "Error", text)])


def _ack(msg: Message, text: str, effect: Callable[[], None] | None = None) -> Outcome:
    return Outcome([response(msg, "Success", text)], effect)


# ---------------------------------------------------------------------- session actions


def _login(ctx: ActionContext, msg: Message) -> Outcome:
    if ctx.session.authenticated:
        return _ack(msg, "Already authenticated")
    username = msg.get("Username") or ""
    secret = ctx.credentials.get(username)
    if (msg.get("AuthType") or "").lower() == "md5":
        key = msg.get("Key") or ""
        challenge = ctx.session.challenge or ""
        expected = hashlib.md5(f"{challenge}{secret}".encode()).hexdigest() if secret is not None else None
        ok = bool(challenge) and expected is not None and key.lower() == expected
    else:
        ok = secret is not None and (msg.get("Secret") or "") == secret
    if not ok:
        return Outcome([response(msg, "Error", "Authentication failed")], close=True)
    session = ctx.session
    session.authenticated = True
    session.username = username
    if "Events" in msg:
        session.event_mask = parse_event_mask(msg.get("Events"))
    replies = [response(msg, "Success", "Authentication accepted")]
    if "system" in session.event_mask:
        uptime = str(int(ctx.uptime()))
        replies.append(
            [
                ("Event", "FullyBooted"),
                ("Privilege", "system,all"),
                ("Uptime", uptime),
                ("LastReload", uptime),
                ("Status", "Fully Booted"),
            ]
        )
    return Outcome(replies)


def _challenge(ctx: ActionContext, msg: Message) -> Outcome:
    if (msg.get("AuthType") or "").lower() != "md5":
        return _error(msg, "Must specify AuthType")
    if not ctx.session.challenge:
        ctx.session.challenge = str(random.randint(10_000_000, 99_999_999))
    return Outcome([response(msg, "Success", extra=[("Challenge", ctx.session.challenge)])])


def _logoff(ctx: ActionContext, msg: Message) -> Outcome:
    return Outcome([response(msg, "Goodbye", "Thanks for all the fish.")], close=True)


def _ping(ctx: ActionContext, msg: Message) -> Outcome:
    now = ctx.pbx.scheduler.now()
    return Outcome([response(msg, "Success", extra=[("Ping", "Pong"), ("Timestamp", f"{now:.6f}")])])


def _events(ctx: ActionContext, msg: Message) -> Outcome:
    ctx.session.event_mask = parse_event_mask(msg.get("EventMask"))
    state = "On" if ctx.session.event_mask else "Off"
    return Outcome([response(msg, "Success", extra=[("Events", state)])])


# ---------------------------------------------------------------------- call actions


def parse_variables(values: list[str]) -> list[tuple[str, str]]:
    """``Variable: A=1`` headers, each possibly ``A=1,B=2`` (astman_get_variables)."""
    out: list[tuple[str, str]] = []
    for value in values:
        for item in value.split(","):
            name, sep, val = item.partition("=")
            if sep and name.strip():
                out.append((name.strip(), val))
    return out


def _int_header(msg: Message, key: str) -> tuple[bool, int | None]:
    raw = msg.get(key)
    if raw is None or not raw.strip():
        return True, None
    try:
        return True, int(raw.strip())
    except ValueError:
        return False, None


def _originate(ctx: ActionContext, msg: Message) -> Outcome:
    channel = (msg.get("Channel") or "").strip()
    if not channel:
        return _error(msg, "Channel not specified")
    try:
        parse_dial_target(channel)
    except InvalidChannel:
        return _error(msg, "Invalid channel")
    ok, priority = _int_header(msg, "Priority")
    if not ok or (priority is not None and priority < 1):
        return _error(msg, "Invalid priority")
    ok, timeout_ms = _int_header(msg, "Timeout")
    if not ok:
        return _error(msg, "Invalid timeout")
    application = (msg.get("Application") or "").strip() or None
    request = OriginateRequest(
        channel=channel,
        context=None if application else (msg.get("Context") or "default"),
        exten=None if application else (msg.get("Exten") or "s"),
        priority=priority or 1,
        application=application,
        data=msg.get("Data") or "",
        timeout=(timeout_ms if timeout_ms is not None and timeout_ms > 0 else 30_000) / 1000.0,
        caller_id=msg.get("CallerID"),
        variables=parse_variables(msg.get_all("Variable")),
        account=msg.get("Account") or "",
        channel_id=(msg.get("ChannelId") or "").strip() or None,
        other_channel_id=(msg.get("OtherChannelId") or "").strip() or None,
        action_id=msg.get("ActionID"),
        is_async=is_true(msg.get("Async")),
    )
    if request.is_async:
        return _ack(msg, "Originate successfully queued", lambda: ctx.pbx.originate(request))

    def answered(result: OriginateResult) -> None:
        if result.success:
            ctx.send(response(msg, "Success", "Originate successfully queued"))
        else:
            ctx.send(response(msg, "Error", "Originate failed"))

    return Outcome(effect=lambda: ctx.pbx.originate(request, answered))


def _hangup(ctx: ActionContext, msg: Message) -> Outcome:
    name = (msg.get("Channel") or "").strip()
    if not name:
        return _error(msg, "No channel specified")
    ok, cause = _int_header(msg, "Cause")
    if not ok or (cause is not None and not 0 < cause <= 127):
        cause = None  # Asterisk logs a notice and hangs up without setting the cause
    if ctx.pbx.find(name) is None:
        return _error(msg, "No such channel")
    return _ack(msg, "Channel Hungup", lambda: ctx.pbx.hangup(name, cause))


def _redirect(ctx: ActionContext, msg: Message) -> Outcome:
    name = (msg.get("Channel") or "").strip()
    context = (msg.get("Context") or "").strip()
    exten = (msg.get("Exten") or "").strip()
    if not name:
        return _error(msg, "Channel not specified")
    if not context:
        return _error(msg, "Context not specified")
    if not exten:
        return _error(msg, "Exten not specified")
    if not (msg.get("Priority") or "").strip():
        return _error(msg, "Priority not specified")
    ok, priority = _int_header(msg, "Priority")
    if not ok or priority is None or priority < 1:
        return _error(msg, "Priority is invalid")
    if ctx.pbx.find(name) is None:
        return _error(msg, f"Channel does not exist: {name}")
    extra = (msg.get("ExtraChannel") or "").strip() or None
    if extra is not None and ctx.pbx.find(extra) is None:
        return _error(msg, f"ExtraChannel does not exist: {extra}")
    extra_target = None
    if extra is not None:
        _, extra_priority = _int_header(msg, "ExtraPriority")
        extra_target = (
            (msg.get("ExtraContext") or context).strip(),
            (msg.get("ExtraExten") or exten).strip(),
            extra_priority or priority,
        )
    if not ctx.pbx.can_redirect(name):
        return _error(msg, "Redirect failed")
    return _ack(
        msg,
        "Redirect successful",
        lambda: ctx.pbx.redirect(name, context, exten, priority, extra, extra_target),
    )


def _setvar(ctx: ActionContext, msg: Message) -> Outcome:
    variable = (msg.get("Variable") or "").strip()
    if not variable:
        return _error(msg, "No variable specified")
    channel = (msg.get("Channel") or "").strip() or None
    if channel is not None and ctx.pbx.find(channel) is None:
        return _error(msg, "No such channel")
    value = msg.get("Value") or ""
    return _ack(msg, "Variable Set", lambda: ctx.pbx.set_var(channel, variable, value))


def _getvar(ctx: ActionContext, msg: Message) -> Outcome:
    variable = (msg.get("Variable") or "").strip()
    if not variable:
        return _error(msg, "No variable specified")
    channel = (msg.get("Channel") or "").strip() or None
    found, value = ctx.pbx.get_var(channel, variable)
    if not found:
        return _error(msg, "No such channel")
    return Outcome([response(msg, "Success", extra=[("Variable", variable), ("Value", value or "")])])


def _core_show_channels(ctx: ActionContext, msg: Message) -> Outcome:
    """A list action: listack, one CoreShowChannel per channel, CoreShowChannelsComplete."""
    action_id = msg.get("ActionID")
    core = ctx.pbx.core
    now = core.now()
    replies = [response(msg, "Success", extra=[("EventList", "start"), ("Message", "Channels will follow")])]
    channels = list(core.channels.values())
    replies += [core.events.core_show_channel(ch, action_id, now) for ch in channels]
    complete: list[Header] = [("Event", "CoreShowChannelsComplete")]
    if action_id is not None:
        complete.append(("ActionID", action_id))
    complete += [("EventList", "Complete"), ("ListItems", str(len(channels)))]
    return Outcome([*replies, complete])


HANDLERS: dict[str, Callable[[ActionContext, Message], Outcome]] = {
    "login": _login,
    "challenge": _challenge,
    "logoff": _logoff,
    "ping": _ping,
    "events": _events,
    "originate": _originate,
    "hangup": _hangup,
    "redirect": _redirect,
    "setvar": _setvar,
    "getvar": _getvar,
    "coreshowchannels": _core_show_channels,
}


def dispatch(ctx: ActionContext, msg: Message) -> Outcome:
    """Route one client message like ``process_message`` in manager.c."""
    action = (msg.get("Action") or "").strip()
    if not action:
        return _error(msg, "Missing action in request")
    key = action.lower()
    if not ctx.session.authenticated and key not in _UNAUTHENTICATED_OK:
        return _error(msg, "Permission denied")
    handler = HANDLERS.get(key)
    if handler is None:
        return _error(
            msg, f"Invalid/unknown command: {action}. Use Action: ListCommands to show available commands."
        )
    return handler(ctx, msg)
