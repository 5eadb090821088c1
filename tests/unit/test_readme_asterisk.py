"""The manager.conf and extensions.conf in the README are what the code needs of Asterisk: every
context the processors Redirect or Originate into, the prompts the AMI producer understands, the
channel variables it reads, the limits the originator sets, and the manager permissions."""

from __future__ import annotations

import re
from pathlib import Path

from infra.pbx_sim.scenario import PbxConfig
from producers.ami_actions import DIAL_TIMEOUT_VAR, MAX_SECONDS_VAR
from producers.ami_translate import IVR_USER_EVENT
from schemas.pbx_events import IvrPrompt
from schemas.reference import CallbackServer

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
DEFAULTS = CallbackServer(server_id="x", ami_host="h", ami_username="u", ami_secret="s")


def _block(first_line: str) -> str:
    blocks = re.findall(r"```ini\n(.*?)```", README, re.S)
    [block] = [b for b in blocks if b.startswith(first_line)]
    return block


def _contexts(conf: str) -> dict[str, str]:
    """Context name -> its body (the lines up to the next context)."""
    parts = re.split(r"^\[([\w.-]+)\][^\n]*\n", conf, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_manager_conf_sends_our_channel_variables_and_grants_what_we_use():
    conf = _block("; manager.conf")
    channelvars = re.search(r"^channelvars\s*=\s*(.+)$", conf, re.M).group(1).split(",")
    expected = ["CALLBACK_ID", "LEG", "ATTEMPT"]  # what ami_translate reads off every event
    assert [v.strip() for v in channelvars] == list(PbxConfig().channelvars) == expected
    user = _contexts(conf)["callback"]
    read = re.search(r"^read\s*=\s*(.+)$", user, re.M).group(1).split(",")
    write = re.search(r"^write\s*=\s*(.+)$", user, re.M).group(1).split(",")
    assert {"call", "user", "system"} <= set(read)  # channel events, UserEvent, FullyBooted/Shutdown
    assert {"call", "originate"} <= set(write)  # Hangup/Redirect/Setvar, Originate
    assert re.search(r"^timestampevents\s*=\s*yes$", conf, re.M)


def test_extensions_conf_has_every_context_the_pipeline_uses():
    contexts = _contexts(_block("; extensions.conf"))
    local_context = DEFAULTS.originate_channel.split("@", 1)[1]
    needed = {
        DEFAULTS.inbound_context, local_context, DEFAULTS.originate_context, DEFAULTS.pin_context,
        DEFAULTS.card_number_context, DEFAULTS.destination_context, DEFAULTS.dial_b_context,
        DEFAULTS.busy_ivr_context, DEFAULTS.failed_ivr_context,
    }
    assert needed <= set(contexts), needed - set(contexts)
    assert f"exten => {DEFAULTS.originate_exten}," in contexts[DEFAULTS.originate_context]


def test_each_input_context_raises_the_user_event_with_its_prompt():
    contexts = _contexts(_block("; extensions.conf"))
    by_context = {
        DEFAULTS.pin_context: IvrPrompt.PIN,
        DEFAULTS.card_number_context: IvrPrompt.CARD_NUMBER,
        DEFAULTS.destination_context: IvrPrompt.DESTINATION,
    }
    assert set(by_context.values()) == set(IvrPrompt)
    assert PbxConfig().input_contexts == {c: p.value for c, p in by_context.items()}  # the simulator too
    for context, prompt in by_context.items():
        body = contexts[context]
        event = re.search(rf"UserEvent\({IVR_USER_EVENT},(.*)\)", body)
        assert event, context
        headers = dict(h.strip().split(": ", 1) for h in event.group(1).split(","))
        assert headers["Prompt"] == prompt.value and headers["Digits"] == "${DIGITS}"
        assert "Attempt" in headers  # tells a repeated wrong PIN from a duplicate event


def test_leg_b_gets_the_limits_the_originator_sets_and_says_it_is_leg_b():
    contexts = _contexts(_block("; extensions.conf"))
    dial = contexts[DEFAULTS.dial_b_context]
    assert "${" + DIAL_TIMEOUT_VAR + "}" in dial and "S(${" + MAX_SECONDS_VAR + "})" in dial
    assert "__CALLBACK_ID" in dial and "__ATTEMPT" in dial  # inherited by leg B
    handler = re.search(r"b\(([\w-]+)\^", dial).group(1)
    assert "Set(LEG=B)" in contexts[handler]


def test_the_ivr_contexts_play_the_ivr_named_by_the_extension():
    contexts = _contexts(_block("; extensions.conf"))
    for context in (DEFAULTS.busy_ivr_context, DEFAULTS.failed_ivr_context):
        assert "Playback(callback/${EXTEN})" in contexts[context]
        assert re.search(r"exten => _\[a-zA-Z0-9\]\.", contexts[context])
