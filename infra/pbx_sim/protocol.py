"""AMI wire framing: ``Key: Value`` lines ended by CRLF, a blank line ends one message.

This module does no I/O. The server feeds it whatever bytes TCP delivers (half a message,
three messages, a message split inside a CRLF) and writes what :func:`encode` returns, so
the framing rules live in one place and are unit-tested with arbitrary read boundaries.

Parsing follows what Asterisk's ``manager.c`` accepts from clients rather than what it
sends: a bare LF ends a line as well as CRLF, the space after the colon is optional, and
lines without a colon are ignored. Header order and duplicates (``Variable:`` may repeat)
are preserved, because both carry meaning in AMI.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: AMI protocol version of Asterisk 18 (``manager.c`` ``AMI_VERSION`` in the 18.x series).
AMI_VERSION = "7.0.3"

EOL = "\r\n"

Header = tuple[str, str]


def banner(version: str = AMI_VERSION) -> bytes:
    """The greeting line Asterisk writes as soon as a client connects (not a message)."""
    return f"Asterisk Call Manager/{version}{EOL}".encode("ascii")


class FrameTooLarge(ValueError):
    """A client sent more bytes than one AMI message may hold without ending it."""


@dataclass(frozen=True)
class Message:
    """One AMI message (action, response or event) as an ordered list of headers.

    Lookups are case-insensitive like Asterisk's ``astman_get_header``; the first
    occurrence wins for :meth:`get`, :meth:`get_all` returns every occurrence.
    """

    headers: tuple[Header, ...]

    @classmethod
    def of(cls, *headers: Header) -> Message:
        return cls(tuple(headers))

    def get(self, key: str, default: str | None = None) -> str | None:
        wanted = key.lower()
        for name, value in self.headers:
            if name.lower() == wanted:
                return value
        return default

    def get_all(self, key: str) -> list[str]:
        wanted = key.lower()
        return [value for name, value in self.headers if name.lower() == wanted]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[Header]:
        return iter(self.headers)

    def keys(self) -> list[str]:
        return [name for name, _ in self.headers]

    def as_dict(self) -> dict[str, str | list[str]]:
        """Headers as a dict, repeated keys collapsed into a list (panoramisk does the same)."""
        out: dict[str, str | list[str]] = {}
        for name, value in self.headers:
            if name in out:
                previous = out[name]
                out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                out[name] = value
        return out


def _clean(value: str) -> str:
    # A CR or LF inside a value would end the line (or the message) on the client side.
    return value.replace("\r", " ").replace("\n", " ")


def encode(headers: Iterable[Header]) -> bytes:
    """Serialise headers as one AMI message: ``Key: Value`` CRLF lines plus a blank line."""
    lines = [f"{name}: {_clean(value)}{EOL}" for name, value in headers]
    lines.append(EOL)
    return "".join(lines).encode("utf-8")


def parse_line(line: str) -> Header | None:
    """Split one header line; ``None`` for lines Asterisk would ignore (no colon)."""
    name, sep, value = line.partition(":")
    name = name.strip()
    if not sep or not name:
        return None
    return name, value.lstrip(" \t").rstrip()


class Decoder:
    """Incremental AMI parser: :meth:`feed` raw bytes, get back every completed message.

    Why incremental: TCP guarantees order, not boundaries, so a message may arrive in
    pieces or several may arrive in one read. ``max_message_bytes`` bounds the memory a
    misbehaving client can make us hold for a message it never ends.
    """

    def __init__(self, max_message_bytes: int = 256 * 1024) -> None:
        self._max = max_message_bytes
        self._partial_line = b""
        self._headers: list[Header] = []
        self._pending_bytes = 0

    def feed(self, data: bytes) -> list[Message]:
        messages: list[Message] = []
        buffer = self._partial_line + data
        *lines, self._partial_line = buffer.split(b"\n")
        for raw in lines:
            self._pending_bytes += len(raw) + 1
            text = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not text.strip():
                if self._headers:
                    messages.append(Message(tuple(self._headers)))
                self._headers = []
                self._pending_bytes = 0
                continue
            header = parse_line(text)
            if header is not None:
                self._headers.append(header)
        if self._pending_bytes + len(self._partial_line) > self._max:
            raise FrameTooLarge(f"AMI message exceeds {self._max} bytes without a blank line")
        return messages
