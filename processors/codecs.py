"""Faust codecs from our pydantic contracts, one per catalogued topic, and the inputs' decoder.

Faust serializes table values (and anything sent with a codec) through named codecs; these wrap
the pydantic models of ``schemas.topics`` so the processors' tables and topics speak exactly the
contracts in ``docs/contracts``. Inputs are decoded here too, not by Faust: a record that does not
decode must go to its dead-letter topic with the reason, and its neighbours must go on, while a
Faust deserialization error would only be logged.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs
from pydantic import BaseModel, RootModel, TypeAdapter, ValidationError

from schemas.envelope import invalid_record
from schemas.export import model_for
from schemas.topics import BY_NAME

#: name of the key codec (UTF-8 text both ways; Faust's 'raw' would give bytes back on recovery)
KEY_CODEC = "callback-utf8"


class Utf8(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return obj.encode() if isinstance(obj, str) else bytes(obj)

    def _loads(self, s: bytes) -> Any:
        return s.decode()


class PydanticCodec(codecs.Codec):
    """JSON through a pydantic model; a ``RootModel`` union decodes to the member it holds."""

    def __init__(self, model: type[BaseModel] | None = None, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        assert model is not None
        self.model = model
        self.unwrap = issubclass(model, RootModel)
        self.adapter = TypeAdapter(model)

    def _dumps(self, obj: Any) -> bytes:
        return obj.model_dump_json().encode()

    def _loads(self, s: bytes) -> Any:
        value = self.model.model_validate_json(s)
        return value.root if self.unwrap else value


def codec_name(topic: str) -> str:
    return f"callback:{topic}"


def register_codecs() -> None:
    """Register the key codec and one codec per catalogued topic (idempotent)."""
    codecs.register(KEY_CODEC, Utf8())
    for name, spec in BY_NAME.items():
        codecs.register(codec_name(name), PydanticCodec(model=model_for(spec)))


class InvalidRecord(ValueError):
    """An input that is not a valid record of its topic; ``kind`` is the dead-letter error kind."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def decode(topic: str, value: bytes | None) -> Any:
    """The record ``value`` of ``topic`` holds (a union member for union topics), or InvalidRecord."""
    if not value:
        raise InvalidRecord("malformed_json", "empty record value")
    codec = codecs.get_codec(codec_name(topic))
    try:
        return codec.loads(value)
    except ValidationError as exc:
        raise InvalidRecord(*invalid_record(exc)) from None
