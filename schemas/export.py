"""JSON Schema export of every topic's record value, for teams that consume our topics."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.envelope import ENVELOPE_FIELDS, every_object
from schemas.topics import CATALOGUE, TopicSpec


def model_for(spec: TopicSpec) -> type[BaseModel]:
    module_name, _, attr = spec.value_model.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


#: The JSON Schema dialect of every contract
DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: Refuses a string that ends in a newline. JSON Schema patterns are ECMA-262 regular expressions,
#: where ``$`` is the end of the string, but validators built on Python's ``re`` (the ``jsonschema``
#: package) let ``$`` match before a final newline too: with this beside every pattern they refuse
#: "123\n" for a phone number, as the models do.
NO_FINAL_NEWLINE = {"pattern": "\n$"}


def _guard_patterns(schema: dict[str, Any]) -> None:
    for node in every_object(schema):
        if isinstance(node.get("pattern"), str) and node["pattern"].endswith("$") and "not" not in node:
            node["not"] = dict(NO_FINAL_NEWLINE)


def _require_envelope(schema: dict[str, Any]) -> None:
    """The envelope fields of every record that has them are required: on the wire a record always
    carries them (the models give them defaults for code, and refuse JSON without them)."""
    for node in every_object(schema):
        properties = node.get("properties", {})
        if isinstance(properties, dict) and {"event_id", "type", "time", "source"} <= set(properties):
            required = node.setdefault("required", [])
            required += [name for name in ENVELOPE_FIELDS if name in properties and name not in required]


def topic_schema(spec: TopicSpec) -> dict[str, Any]:
    """The JSON Schema of a topic's record value: draft 2020-12, self-contained (every ``$ref`` is a
    local ``#/$defs/...``), valid for a record exactly when the model is (docs/contracts/README.md)."""
    schema = model_for(spec).model_json_schema(mode="serialization")
    _guard_patterns(schema)
    _require_envelope(schema)
    # no ``$id``: a URN one made resolvers look the local refs up under the URN, which most cannot
    schema["$schema"] = DIALECT
    schema["x-topic"] = {
        "name": spec.name,
        "key": spec.key,
        "partitions": spec.partitions,
        "cleanup.policy": spec.cleanup_policy,
        "retention.ms": spec.retention_ms,
        "description": spec.description,
    }
    return schema


def render_all() -> dict[str, str]:
    """File name -> JSON text for every catalogued topic (stable formatting, so diffs are meaningful)."""
    return {
        f"{spec.name}.schema.json": json.dumps(topic_schema(spec), indent=2, sort_keys=True) + "\n"
        for spec in CATALOGUE
    }


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
