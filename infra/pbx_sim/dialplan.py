"""The slice of extensions.conf the simulator emulates: what a channel does in each context.

The callback service steers calls only with AMI (Originate into a context, Redirect to
another), so the PBX side reduces to a handful of context kinds, named in the scenario's
``pbx`` section:

* input contexts (``callback-pin``, ``callback-destination``, ``callback-card-number``):
  answer, play the prompt, raise the ``CallbackInput`` UserEvent with the digits the
  subscriber keys (contract in ``infra/pbx_sim/__init__.py``), then wait;
* playback contexts (``callback-busy-ivr``, ``callback-failed-ivr``): play, hang up (16);
* the leg-B dial context (``callback-dial-b``): Dial() the extension, bridge on answer,
  end the call when a party's talk time or ``CALLBACK_MAX_SECONDS`` runs out;
* anything else: wait, as ``Wait()`` or music on hold would;
* the inbound context: a ringing, never answered initiation call.

A subscriber left waiting ``idle_hangup`` seconds puts the phone down.
"""

from __future__ import annotations

from collections.abc import Callable

from infra.pbx_sim.calls import CallCore
from infra.pbx_sim.causes import NORMAL_CLEARING, ChannelState
from infra.pbx_sim.channels import Channel, Role, parse_dial_target


def positive_float(value: str | None) -> float | None:
    """A channel variable as a positive number of seconds, or None if unset or not one."""
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and number > 0 else None


class Dialplan:
    def __init__(self, core: CallCore) -> None:
        self.core = core
        self.config = core.config

    # ------------------------------------------------------------------ entering a context

    def enter(self, ch: Channel, context: str, exten: str, priority: int = 1) -> None:
        """Run what the emulated dialplan does at ``context,exten,priority``."""
        core, cfg = self.core, self.config
        ch.cancel_timers()
        ch.context, ch.exten, ch.priority = context, exten, priority
        if context in cfg.input_contexts:
            self._prompt(ch, cfg.input_contexts[context])
        elif context in cfg.playback_contexts:
            core.set_state(ch, ChannelState.UP)
            core.newexten(ch, "Playback", context)
            core.later([ch], cfg.playback_contexts[context], lambda: core.hangup(ch, NORMAL_CLEARING))
        elif context == cfg.dial_context:
            self._dial_leg_b(ch, exten)
        else:
            core.newexten(ch, "Wait", "")
            self.arm_idle(ch)

    def arm_idle(self, ch: Channel) -> None:
        core = self.core
        core.later([ch], core.behaviour(ch).idle_hangup, lambda: core.party_hangup(ch))

    def _prompt(self, ch: Channel, prompt: str) -> None:
        core = self.core
        core.set_state(ch, ChannelState.UP)  # Read() answers an unanswered channel
        core.newexten(ch, "Read", f"DIGITS,callback/{prompt}")
        occurrence = ch.prompt_count.get(prompt, 0)
        ch.prompt_count[prompt] = occurrence + 1
        sub = core.behaviour(ch)
        digits = sub.digits_for(prompt, occurrence)

        def keyed() -> None:
            ch.priority += 1
            headers = [
                ("Prompt", prompt),
                ("Digits", digits or ""),
                ("Status", "OK" if digits else "TIMEOUT"),
                ("Attempt", str(occurrence + 1)),
            ]
            core.emit(core.events.user_event(ch, self.config.user_event, headers, core.now()))
            self.arm_idle(ch)

        core.later([ch], sub.input_delay, keyed)

    # ------------------------------------------------------------------ leg B

    def _dial_leg_b(self, a: Channel, number: str) -> None:
        core, cfg = self.core, self.config
        target = parse_dial_target(cfg.dial_channel.format(number=number))
        timeout = positive_float(a.get_var(cfg.dial_timeout_variable)) or cfg.dial_timeout
        core.newexten(a, "Dial", f"{target.tech}/{target.dial_string},{int(timeout)}")
        variables = {name: value for name in cfg.leg_b_inherit if (value := a.get_var(name)) is not None}
        variables.update(cfg.leg_b_variables)

        def failed(_status: str, _cause: int) -> None:
            a.priority += 1
            self.arm_idle(a)  # the callback decides: Busy IVR / Failed IVR via Redirect

        core.dial(
            a, target, timeout, variables=variables, on_answer=lambda b: self._talk(a, b), on_fail=failed
        )

    def _talk(self, a: Channel, b: Channel) -> None:
        """Bridge A and B; the call ends at whichever comes first: A or B hangs up, or the limit."""
        core = self.core
        core.bridge(b, a)
        ends: list[tuple[float, Callable[[], None]]] = [
            (core.behaviour(a).talk_seconds, lambda: core.party_hangup(a)),
            (core.behaviour(b).talk_seconds, lambda: core.party_hangup(b)),
        ]
        limit = positive_float(a.get_var(self.config.dial_limit_variable))
        if limit is not None:
            ends.append((limit, lambda: core.hangup(b, NORMAL_CLEARING)))
        delay, end = min(ends, key=lambda item: item[0])
        core.later([a, b], delay, end)

    # ------------------------------------------------------------------ Redirect

    def can_redirect(self, ch: Channel) -> bool:
        """Only a channel running dialplan can jump: answered ones, or ringing inbound calls."""
        return ch.state == ChannelState.UP or ch.role is Role.INBOUND

    def redirect(self, moves: list[tuple[Channel, tuple[str, str, int]]]) -> None:
        """``ast_async_goto`` for one or two channels (Redirect with ExtraChannel).

        Each mover leaves its bridge or ringing Dial(); whoever it leaves behind hangs up,
        unless that is the other mover.
        """
        core = self.core
        movers = [ch for ch, _ in moves]
        left_behind: list[Channel] = []
        for ch in movers:
            if ch.dialing is not None:
                left_behind.append(core.cancel_dial(ch))
            if ch.bridge is not None:
                left_behind += core.dissolve(ch.bridge, leaving=ch, keep=movers)
        for other in left_behind:
            core.hangup(other, NORMAL_CLEARING)
        for ch, (context, exten, priority) in moves:
            self.enter(ch, context, exten, priority)

    # ------------------------------------------------------------------ inbound

    def inbound(self, ani: str | None, did: str, ring_timeout: float | None = None) -> Channel:
        """An initiation call arrives from the network and rings, unanswered."""
        core, cfg = self.core, self.config
        ch = core.new_channel(
            core.ids.channel_name(cfg.inbound_channel),
            Role.INBOUND,
            ani or "",
            state=ChannelState.DOWN,
            context=cfg.inbound_context,
            exten=did,
            caller=(ani or "", ""),
        )
        core.set_state(ch, ChannelState.RING)
        for name, template in cfg.inbound_variables.items():
            value = template.format(did=did, ani=ani or "")
            core.newexten(ch, "Set", f"{name}={value}")
            core.set_var(ch, name, value)
            ch.priority += 1
        core.newexten(ch, "Ringing", "")
        if ring_timeout is not None:
            core.later([ch], ring_timeout, lambda: core.hangup(ch, NORMAL_CLEARING))
        return ch
