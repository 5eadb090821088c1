"""JSON Schema export of every topic's record value, for teams that consume our topics."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.topics import CATALOGUE, TopicSpec


def model_for(spec: TopicSpec) -> type[BaseModel]:
    module_name, _, attr = spec.value_model.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def topic_schema(spec: TopicSpec) -> dict[str, Any]:
    schema = model_for(spec).model_json_schema(mode="serialization")
    schema["$id"] = f"urn:callback-pipeline:topic:{spec.name}"
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
