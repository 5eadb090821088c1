"""AMI framing of the PBX simulator: what goes on the wire and how arbitrary TCP reads are parsed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.pbx_sim.protocol import AMI_VERSION, Decoder, FrameTooLarge, Message, banner, encode


def test_banner_is_asterisk_call_manager_line() -> None:
    assert banner() == f"Asterisk Call Manager/{AMI_VERSION}\r\n".encode()
    assert banner("5.0.2") == b"Asterisk Call Manager/5.0.2\r\n"


def test_encode_writes_crlf_lines_and_a_blank_line() -> None:
    data = encode([("Response", "Success"), ("ActionID", "a1"), ("Message", "Authentication accepted")])
    assert data == b"Response: Success\r\nActionID: a1\r\nMessage: Authentication accepted\r\n\r\n"


def test_encode_cannot_be_broken_by_newlines_in_values() -> None:
    data = encode([("Event", "UserEvent"), ("Note", "two\r\nlines\n")])
    assert Decoder().feed(data) == [Message.of(("Event", "UserEvent"), ("Note", "two  lines"))]


def test_decoder_returns_several_messages_from_one_read() -> None:
    data = b"Action: Ping\r\nActionID: 1\r\n\r\nAction: Logoff\r\nActionID: 2\r\n\r\n"
    messages = Decoder().feed(data)
    assert [m.get("ActionID") for m in messages] == ["1", "2"]


def test_decoder_keeps_partial_messages_until_the_blank_line() -> None:
    decoder = Decoder()
    assert decoder.feed(b"Action: Orig") == []
    assert decoder.feed(b"inate\r\nChannel: PJSIP/1@x\r") == []
    assert decoder.feed(b"\n\r") == []
    (msg,) = decoder.feed(b"\n")
    assert msg.headers == (("Action", "Originate"), ("Channel", "PJSIP/1@x"))


def test_decoder_survives_byte_by_byte_delivery() -> None:
    data = encode([("Action", "Login"), ("Username", "u"), ("Secret", "s: with colon")]) * 2
    decoder = Decoder()
    messages = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert len(messages) == 2
    assert messages[0].get("secret") == "s: with colon"


def test_decoder_accepts_bare_lf_and_missing_space_like_asterisk() -> None:
    (msg,) = Decoder().feed(b"Action:Ping\nActionID:   7\n\n")
    assert msg.get("Action") == "Ping"
    assert msg.get("ActionID") == "7"


def test_decoder_keeps_repeated_headers_in_order_and_skips_junk() -> None:
    raw = b"\r\n\r\nAction: Originate\r\nnot a header\r\nVariable: A=1\r\nVariable: B=2,C=3\r\n\r\n"
    (msg,) = Decoder().feed(raw)
    assert msg.get_all("variable") == ["A=1", "B=2,C=3"]
    assert msg.keys() == ["Action", "Variable", "Variable"]
    assert msg.as_dict() == {"Action": "Originate", "Variable": ["A=1", "B=2,C=3"]}


def test_message_lookup_is_case_insensitive() -> None:
    msg = Message.of(("ActionID", "x"))
    assert msg.get("actionid") == "x"
    assert "ACTIONID" in msg
    assert msg.get("Missing") is None


def test_decoder_refuses_a_message_that_never_ends() -> None:
    decoder = Decoder(max_message_bytes=1024)
    with pytest.raises(FrameTooLarge):
        for _ in range(200):
            decoder.feed(b"Variable: " + b"x" * 20 + b"\r\n")


_key = st.from_regex(r"[A-Za-z][A-Za-z0-9\-()]{0,15}", fullmatch=True)
_value = st.from_regex(r"([!-~]([ -~]{0,30}[!-~])?)?", fullmatch=True)
_message = st.lists(st.tuples(_key, _value), min_size=1, max_size=8)


@given(messages=st.lists(_message, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_any_chunking_decodes_what_was_encoded(
    messages: list[list[tuple[str, str]]], cuts: list[int]
) -> None:
    data = b"".join(encode(m) for m in messages)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    decoder = Decoder()
    decoded = [m for a, b in zip(bounds, bounds[1:], strict=False) for m in decoder.feed(data[a:b])]
    assert [list(m.headers) for m in decoded] == messages
