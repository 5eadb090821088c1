"""A JSON record is valid for its published schema (docs/contracts/) exactly when it is valid for the
model that reads it (docs/contracts/README.md).

For every topic of the catalogue, with the stock ``jsonschema`` validator (no custom resolver) and
``model_validate_json`` as the pipeline reads records:

* instances generated from the schema are accepted by the model;
* instances from the model (schema-generated ones the model took, dumped again by the model) are
  valid for the schema, and so are, or are not, the same instances mutated: a number for a money
  string, an epoch integer for a time, "3" or true for an integer, a key dropped or added, ...

The one kind of refusal allowed on one side only is a rule JSON Schema cannot state (the order of
a leg's times, a tariff's unique prefixes): each schema lists those in ``x-rules``, and the model
must then give exactly such a rule as its reason.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from schemas.envelope import every_object
from schemas.export import DIALECT, model_for
from schemas.topics import CATALOGUE, DEAD_LETTER_TOPICS, PROCESSORS_APP_ID, STREAM_TOPICS, TopicSpec
from tests.json_schema_strategies import documents

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts"
TOPICS = [pytest.param(spec, id=spec.name) for spec in CATALOGUE]

#: per topic and test, so that 26 topics x 2 tests stay well under a minute on a busy machine
#: (generating times from their patterns is what costs); fixed seed: a failure is the same again
EXAMPLES = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
#: mutations tried on each record from the model
MUTATIONS = 8


@cache
def published(name: str) -> dict[str, Any]:
    return json.loads((CONTRACTS / f"{name}.schema.json").read_text())


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(published(name))


def rules_of(schema: Any) -> set[str]:
    """Every ``x-rules`` entry of a schema and of its ``$defs``."""
    return {rule for node in every_object(schema) for rule in node.get("x-rules", ())}


def model_verdict(model: type[BaseModel], text: str, rules: set[str]) -> bool | None:
    """True when the model takes the record, False when it refuses it, None when its only reasons
    are rules the schema lists in ``x-rules`` (which a schema cannot check)."""
    try:
        model.model_validate_json(text)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if rules and all(any(rule in e["msg"] for rule in rules) for e in errors):
            return None
        return False
    return True


def schema_verdict(spec: TopicSpec, record: Any) -> bool:
    return validator(spec.name).is_valid(record)


@pytest.mark.parametrize("spec", TOPICS)
def test_every_schema_file_is_a_draft_2020_12_schema_with_local_refs_only(spec):
    schema = published(spec.name)
    assert schema["$schema"] == DIALECT
    Draft202012Validator.check_schema(schema)
    lines = json.dumps(schema, indent=0).splitlines()
    refs = [line.split('"$ref": ')[1] for line in lines if '"$ref"' in line]
    assert all(ref.startswith('"#/$defs/') for ref in refs), refs
    # what docs/contracts/README.md says: stream records carry the whole envelope, dead letters all
    # of it but schema_version, the others (reference data, credentials, changelogs) none of it
    envelope = {"event_id", "type", "time", "source"}
    if spec in DEAD_LETTER_TOPICS:
        expected = envelope
    elif spec in STREAM_TOPICS and not spec.name.startswith(PROCESSORS_APP_ID):
        expected = envelope | {"schema_version"}
    else:
        expected = set()
    branches = schema.get("oneOf") or [schema]
    for branch in branches:
        body = schema["$defs"][branch["$ref"].rsplit("/", 1)[1]] if "$ref" in branch else branch
        assert expected <= set(body.get("required", ())), (spec.name, body.get("title"))
        assert set(body["properties"]) & (envelope | {"schema_version"}) == expected, spec.name


@pytest.mark.parametrize("spec", TOPICS)
def test_the_model_takes_every_instance_of_the_schema(spec):
    model, rules = model_for(spec), rules_of(published(spec.name))
    refused: list[tuple[str, str]] = []

    @EXAMPLES
    @given(documents(published(spec.name)))
    def check(record):
        assert schema_verdict(spec, record)
        text = json.dumps(record)
        if model_verdict(model, text, rules) is False:
            refused.append((text, str(model_verdict_error(model, text))))

    check()
    assert not refused, refused[:3]


def model_verdict_error(model: type[BaseModel], text: str) -> str:
    try:
        model.model_validate_json(text)
    except ValidationError as exc:
        return str(exc)
    return ""


# --- from the model ---------------------------------------------------------------------------------

#: what a writer gets wrong: a number for a string (money!), an epoch for a time, a string or a
#: boolean for an integer, an empty or padded string, a trailing newline, the wrong container.
#: No integral float (3.0): JSON Schema's ``integer`` takes it, the models refuse it (the one
#: difference, docs/contracts/README.md).
WRONG_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1700000000,
    2**64,
    3.5,
    "",
    "abc",
    "3",
    "-1",
    "true",
    "0.20",
    "-0.20",
    "1e3",
    " 1",
    "0.123456789",
    "100000.5",
    "1700000000",
    "2026-01-31T12:00:00Z",
    "2026-01-31 12:00:00Z",
    "2026-01-31T12:00:00",
    "2021-02-29T00:00:00Z",
    "1970-01-01T00:00:00+01:00",
    [],
    {},
)


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every value of a JSON document, containers included (the root excepted)."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaves(item, (*path, index))
    return found


def get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def like_it_but_wrong(current: Any) -> list[Any]:
    """Mutations of one value that keep its meaning but not its JSON type: what a lax writer does."""
    out: list[Any] = []
    if isinstance(current, bool):
        out += [int(current), str(current).lower()]
    elif isinstance(current, int):
        # never an integral float: current + 0.5 is one when current is past 2**52
        out += [str(current), True, current + 0.5 if abs(current) < 2**50 else 0.5]
    elif isinstance(current, str):
        out += [current + "\n", " " + current, current.lower(), current.upper()]
        try:
            number = float(current)
        except ValueError:
            number = math.inf
        if math.isfinite(number):  # "inf" and "nan" have no JSON number
            out += [number, int(number)]
        if current[:4].isdigit() and current[4:5] == "-":  # a time
            out += [1700000000, current.replace("T", " "), current.rstrip("Z")]
    return out


@st.composite
def mutated(draw: st.DrawFn, record: Any) -> Any:
    record = json.loads(json.dumps(record))
    paths = leaves(record)
    kind = draw(st.sampled_from(["replace", "like", "drop", "add"]))
    if kind == "add" or not paths:
        objects = [(), *[p for p in paths if isinstance(get(record, p), dict)]]
        target = get(record, draw(st.sampled_from(objects)))
        if isinstance(target, dict):
            target[draw(st.sampled_from(["extra", "type", "schema_version", "event_id"]))] = draw(
                st.sampled_from(WRONG_VALUES)
            )
        return record
    path = draw(st.sampled_from(paths))
    parent, last = get(record, path[:-1]), path[-1]
    if kind == "drop":
        del parent[last]
        return record
    options = like_it_but_wrong(parent[last]) if kind == "like" else []
    parent[last] = draw(st.sampled_from(options or list(WRONG_VALUES)))
    return record


@pytest.mark.parametrize("spec", TOPICS)
def test_the_schema_and_the_model_agree_on_records_from_the_model(spec):
    model, rules = model_for(spec), rules_of(published(spec.name))
    disagreements: list[tuple[str, bool, bool | None]] = []

    @EXAMPLES
    @given(st.data())
    def check(data):
        record = data.draw(documents(published(spec.name)))
        if model_verdict(model, json.dumps(record), rules) is not True:
            return  # an x-rule: not a record of the model
        dumped = json.loads(model.model_validate_json(json.dumps(record)).model_dump_json())
        assert schema_verdict(spec, dumped), dumped
        assert model_verdict(model, json.dumps(dumped), rules) is True
        for _ in range(MUTATIONS):
            wrong = data.draw(mutated(dumped))
            by_schema, by_model = schema_verdict(spec, wrong), model_verdict(model, json.dumps(wrong), rules)
            if by_model is not None and by_schema != by_model:
                disagreements.append((json.dumps(wrong), by_schema, by_model))

    check()
    assert not disagreements, disagreements[:3]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price", 0.2),  # a number for money
        ("price", "-1"),  # a price is never negative
        ("price", "abc"),
        ("price", ""),
        ("rate_per_minute", "100000.00000001"),
        ("rated_at", 1700000000),  # an epoch for a time
        ("rated_at", "1700000000"),
        ("attempt", "3"),
        ("attempt", True),
        ("event_id", None),
    ],
)
def test_the_issues_examples_are_refused_by_both(field, value):
    spec = next(s for s in CATALOGUE if s.name == "cdr.rated")
    record = None

    @settings(max_examples=1, deadline=None, derandomize=True)
    @given(documents(published(spec.name)))
    def first(instance):
        nonlocal record
        record = instance

    first()
    assert schema_verdict(spec, record) and model_verdict(model_for(spec), json.dumps(record), set())
    record[field] = value
    assert not schema_verdict(spec, record)
    assert model_verdict(model_for(spec), json.dumps(record), set()) is False
