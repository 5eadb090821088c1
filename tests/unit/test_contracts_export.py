"""docs/contracts/ is what other teams code against: it must match the models exactly."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.export import render_all
from schemas.topics import CATALOGUE

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts"


def test_every_topic_has_a_schema_file():
    rendered = render_all()
    assert set(rendered) == {f"{t.name}.schema.json" for t in CATALOGUE}
    for text in rendered.values():
        assert json.loads(text)["x-topic"]["name"]


def test_committed_contracts_match_the_models():
    rendered = render_all()
    committed = {p.name: p.read_text() for p in CONTRACTS.glob("*.schema.json")}
    stale = sorted(name for name in rendered if committed.get(name) != rendered[name])
    extra = sorted(set(committed) - set(rendered))
    assert not stale and not extra, (
        f"docs/contracts drifted from schemas/ (stale: {stale}, extra: {extra}); "
        "run `callback schemas export docs/contracts` and commit the result"
    )
