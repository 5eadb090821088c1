"""Hypothesis strategies for the JSON documents a JSON Schema of docs/contracts/ describes.

Covers the keywords those schemas use (``$ref`` to ``#/$defs``, ``type``, ``properties``,
``required``, ``additionalProperties``, ``propertyNames``, ``anyOf``/``oneOf``, ``enum``,
``const``, ``pattern``, lengths, bounds, ``items``/``prefixItems``); what a generator cannot aim at
(``if``/``then``/``else``, ``not``) is met by generating both sides of each ``then`` and keeping the
documents the schema's own validator accepts. (``hypothesis-jsonschema`` 0.23 does not run with
this Hypothesis: ``'many' object has no attribute 'more'``.)
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator

#: any JSON value, small
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


def documents(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Documents valid for ``schema`` (a whole schema file: its ``$defs`` are the refs' targets)."""
    return _node(schema, schema).filter(Draft202012Validator(schema).is_valid)


def _node(node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        return st.deferred(lambda: _node(root["$defs"][name], root))
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return st.one_of([_node(branch, root) for branch in node[key]])
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        return _object(node, root)
    if kind == "string":
        return _string(node)
    if kind == "integer":
        return st.integers(node.get("minimum"), node.get("maximum"))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        if "prefixItems" in node:
            return st.tuples(*(_node(item, root) for item in node["prefixItems"])).map(list)
        items = _node(node.get("items", {}), root)
        return st.lists(items, min_size=node.get("minItems", 0), max_size=node.get("maxItems", 3))
    return JSON_VALUES


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = node.get("minLength", 0), node.get("maxLength")
    if "pattern" in node:
        found = st.from_regex(node["pattern"], fullmatch=True)
        return found.filter(lambda s: low <= len(s) <= (high if high is not None else len(s)))
    return st.text(min_size=low, max_size=high if high is not None else max(low, 12))


def _object(node: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    variants = [_fields(node, root, node.get("required", ()))]
    # each ``then`` of the node (or of its ``allOf``): also a variant where its fields are required
    # and not null, so that documents meeting the condition are not all filtered away
    for rule in [node, *node.get("allOf", ())]:
        then = rule.get("then")
        if then:
            narrowed = {**node, "properties": dict(node["properties"])}
            for name in then.get("required", ()):
                narrowed["properties"][name] = _not_null(narrowed["properties"][name])
            condition = rule["if"].get("properties", {})
            narrowed["properties"].update(condition)
            variants.append(_fields(narrowed, root, {*node.get("required", ()), *then.get("required", ())}))
    return st.one_of(variants)


def _not_null(node: dict[str, Any]) -> dict[str, Any]:
    branches = [b for b in node.get("anyOf", ()) if b != {"type": "null"}]
    return branches[0] if len(branches) == 1 else ({"anyOf": branches} if branches else node)


def _fields(node: dict[str, Any], root: dict[str, Any], required: Any) -> st.SearchStrategy[dict[str, Any]]:
    properties = node.get("properties", {})
    fixed = st.fixed_dictionaries(
        {name: _node(properties[name], root) for name in required},
        optional={name: _node(spec, root) for name, spec in properties.items() if name not in required},
    )
    extra = node.get("additionalProperties", True)
    if extra is False or not isinstance(extra, dict) or not extra:
        return fixed
    keys = _string(node.get("propertyNames", {"type": "string"}))
    more = st.dictionaries(keys, _node(extra, root), max_size=3)
    return st.tuples(fixed, more).map(lambda pair: {**pair[1], **pair[0]})
