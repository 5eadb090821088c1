"""What the simulated PBX and its subscribers do: a validated, immutable scenario.

A scenario says, per subscriber number, how the phone behaves when the PBX calls it
(answers after N s, busy, no answer, congestion, unreachable), which digits the person
keys in at each IVR prompt and how long they talk; and which initiation calls arrive
from the network (ANI -> DID at time t). The ``pbx`` section describes the dialplan the
simulator emulates (context names, trunks, ``channelvars``) so the same file documents
what a real Asterisk would need to be configured with.

Files are YAML validated by pydantic; errors name the field path, e.g.
``subscribers.37060000001.answer_after: Input should be greater than or equal to 0``.
Numbers not listed fall back to ``defaults`` (answer after 1 s, talk 5 s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from infra.pbx_sim.protocol import AMI_VERSION

Outcome = Literal["answer", "busy", "no_answer", "congestion", "unreachable"]

_DIGITS = re.compile(r"^[0-9*#]*$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class _Model(BaseModel):
    # Numbers written unquoted in YAML arrive as ints; phone numbers are strings here.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


DigitsInput = Sequence[str | None] | str | None


def _digit_list(value: Any) -> tuple[str | None, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str | int) else list(value)
    out: list[str | None] = []
    for item in items:
        if item is None:
            out.append(None)
            continue
        text = str(item)
        if not _DIGITS.match(text):
            raise ValueError(f"{text!r} is not DTMF digits (0-9, *, #)")
        out.append(text)
    return tuple(out)


class Subscriber(_Model):
    """How one phone number behaves. Times are virtual seconds (scaled by the speed)."""

    outcome: Outcome = "answer"
    outcomes: tuple[Outcome, ...] = Field(
        (), description="outcomes of successive calls to this number (the last repeats); overrides outcome"
    )
    answer_after: float = Field(1.0, ge=0, description="ringing time before the subscriber answers")
    fail_after: float = Field(0.5, ge=0, description="time until busy/congestion/unreachable is signalled")
    hangup_cause: int | None = Field(
        None, ge=1, le=127, description="Q.850 cause for a failed call, overriding the outcome's default"
    )
    talk_seconds: float = Field(5.0, gt=0, description="how long the subscriber talks once bridged")
    pin: tuple[str | None, ...] = Field(
        (), description="digits keyed at successive PIN prompts; null or missing = prompt times out"
    )
    destination: tuple[str | None, ...] = Field((), description="digits keyed at destination prompts")
    card_number: tuple[str | None, ...] = Field((), description="digits keyed at calling-card number prompts")
    inputs: dict[str, tuple[str | None, ...]] = Field(
        default_factory=dict, description="digits for any other prompt name"
    )
    input_delay: float = Field(1.0, ge=0, description="time the subscriber takes to key the digits")
    idle_hangup: float = Field(
        120.0, gt=0, description="an answered subscriber left waiting (no IVR, no bridge) hangs up after this"
    )

    @field_validator("pin", "destination", "card_number", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> tuple[str | None, ...]:
        return _digit_list(value)

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> dict[str, tuple[str | None, ...]]:
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping of prompt name to digits")
        return {str(k): _digit_list(v) for k, v in value.items()}

    def outcome_for(self, call: int) -> Outcome:
        """What the ``call``-th (0-based) call to this number does: busy twice, then answer..."""
        if not self.outcomes:
            return self.outcome
        return self.outcomes[min(call, len(self.outcomes) - 1)]

    def digits_for(self, prompt: str, occurrence: int) -> str | None:
        """Digits keyed the ``occurrence``-th time (0-based) this prompt plays; the last entry repeats."""
        named = {"pin": self.pin, "destination": self.destination, "card_number": self.card_number}
        entries = named.get(prompt) or self.inputs.get(prompt, ())
        if not entries:
            return None
        return entries[min(occurrence, len(entries) - 1)]


class InboundCall(_Model):
    """An initiation call arriving from the network: it rings until the PBX is told to drop it."""

    at: float = Field(0.0, ge=0, description="virtual seconds after the simulator starts")
    ani: str | None = Field(None, description="caller number; null = no caller ID (<unknown>)")
    did: str = Field(min_length=1, description="the dialled Access Number")
    ring_timeout: float | None = Field(
        None, gt=0, description="caller gives up (Hangup cause 16) after this if not dropped before"
    )


class LoadProfile(_Model):
    """Inbound initiations at a fixed rate, for benchmarks."""

    rate: float = Field(gt=0, description="initiations per second")
    did: str = Field(min_length=1)
    seconds: float = Field(gt=0)
    ani_pool: tuple[str, ...] = Field((), description="ANIs to pick from; empty = synthetic numbers")
    ring_timeout: float | None = Field(30.0, gt=0)
    seed: int | None = None


class PbxConfig(_Model):
    """The dialplan and manager.conf the simulator emulates.

    ``input_contexts`` maps an IVR context to the prompt name its UserEvent reports;
    ``playback_contexts`` maps a context that only plays a message to the seconds it plays
    before hanging up; ``dial_context`` is the context whose extension is dialled as leg B.
    """

    system_name: str = Field(
        "pbx-sim", description="asterisk.conf systemname: SystemName and Uniqueid prefix"
    )
    ami_version: str = AMI_VERSION
    channelvars: tuple[str, ...] = ("CALLBACK_ID", "LEG", "ATTEMPT")
    timestamp_events: bool = Field(False, description="manager.conf timestampevents")

    inbound_channel: str = Field("PJSIP/carrier", description="channel name prefix of inbound calls")
    inbound_context: str = "from-trunk"
    inbound_variables: dict[str, str] = Field(
        default_factory=lambda: {"FROM_DID": "{did}"},
        description="Set() by the inbound dialplan; {did} and {ani} are substituted",
    )
    outbound_context: str = Field("from-trunk", description="endpoint context shown on new outbound channels")
    local_dial: str = Field(
        "PJSIP/{number}@carrier", description="what the ;2 half of Local/NUMBER@ctx dials"
    )

    input_contexts: dict[str, str] = Field(
        default_factory=lambda: {
            "callback-pin": "pin",
            "callback-destination": "destination",
            "callback-card-number": "card_number",
        }
    )
    playback_contexts: dict[str, float] = Field(
        default_factory=lambda: {"callback-busy-ivr": 3.0, "callback-failed-ivr": 3.0}
    )
    user_event: str = Field("CallbackInput", description="UserEvent name raised with the keyed digits")

    dial_context: str = "callback-dial-b"
    dial_channel: str = Field("PJSIP/{number}@carrier", description="Dial() target for leg B")
    dial_timeout: float = Field(60.0, gt=0)
    dial_timeout_variable: str = Field(
        "CALLBACK_DIAL_TIMEOUT", description="channel variable on leg A overriding dial_timeout (seconds)"
    )
    dial_limit_variable: str = Field(
        "CALLBACK_MAX_SECONDS",
        description="channel variable on leg A capping the bridged time, like Dial S()",
    )
    leg_b_inherit: tuple[str, ...] = Field(
        ("CALLBACK_ID", "ATTEMPT"),
        description="variables leg B inherits from leg A (__VAR in a real dialplan)",
    )
    leg_b_variables: dict[str, str] = Field(
        default_factory=lambda: {"LEG": "B"}, description="Set() on leg B by the pre-dial handler"
    )

    @field_validator("channelvars", "leg_b_inherit")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a channel variable name")
        return value

    @model_validator(mode="after")
    def _contexts_distinct(self) -> PbxConfig:
        seen: dict[str, str] = {}
        for role, names in (
            ("input_contexts", list(self.input_contexts)),
            ("playback_contexts", list(self.playback_contexts)),
            ("dial_context", [self.dial_context]),
        ):
            for name in names:
                if name in seen:
                    raise ValueError(f"context {name!r} is in both {seen[name]} and {role}")
                seen[name] = role
        return self


def normalise_number(number: str) -> str:
    """Digits only, international ``00`` prefix dropped: ``+370 600``, ``00370600`` -> ``370600``."""
    digits = re.sub(r"[^0-9]", "", number)
    return digits[2:] if digits.startswith("00") else digits


class Scenario(_Model):
    pbx: PbxConfig = Field(default_factory=PbxConfig)
    defaults: Subscriber = Field(default_factory=Subscriber)
    subscribers: dict[str, Subscriber] = Field(default_factory=dict)
    inbound: tuple[InboundCall, ...] = ()
    load: LoadProfile | None = None
    _by_digits: dict[str, Subscriber] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unique_numbers(self) -> Scenario:
        seen: dict[str, str] = {}
        for number, sub in self.subscribers.items():
            key = normalise_number(number)
            if key in seen:
                raise ValueError(f"subscribers {seen[key]!r} and {number!r} are the same number")
            seen[key] = number
            self._by_digits[key] = sub
        return self

    def subscriber(self, number: str) -> Subscriber:
        """Behaviour of ``number``: exact key first, then the same digits written differently."""
        found = self.subscribers.get(number)
        if found is None:
            found = self._by_digits.get(normalise_number(number))
        return found if found is not None else self.defaults


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message lists each problem with its field path."""


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def format_errors(error: ValidationError) -> str:
    return "\n".join(f"{_location(e['loc'])}: {e['msg']}" for e in error.errors())


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate already-loaded data (dict from YAML/JSON, or keyword objects in tests)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ScenarioError(f"{source}: the top level must be a mapping")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}:\n{format_errors(exc)}") from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: invalid YAML: {exc}") from None
    return parse_scenario(data, str(path))
