"""ClickHouse's cause table is schemas/hangup_causes.py, row for row (issue 12 item 7).

The table ``callback.hangup_causes`` is filled by a migration, and a migration cannot import
Python; so this test reads the rows out of the newest migration that fills the table and compares
them with ``Q850_CAUSES``. A cause added to the module without a migration refilling the table
(or the other way round) fails here.
"""

from __future__ import annotations

import re

from infra.migrate import discover
from schemas.hangup_causes import BY_Q850, CALLBACK_HANGUP_CAUSES, Q850_CAUSES, sip_for_q850

_FILLS = "INSERT INTO callback.hangup_causes"
_ROW = re.compile(r"^\s*\((\d+), '([^']*)', (NULL|\d+), '([^']*)', ([01])\),?\s*$")


def migration_rows() -> list[tuple[int, str, int | None, str, int]]:
    filling = [m for m in discover() if _FILLS in m.sql]
    assert filling, "no migration fills callback.hangup_causes"
    [insert] = [s for s in filling[-1].statements() if s.startswith(_FILLS)]
    rows = []
    for line in insert.splitlines():
        match = _ROW.match(line)
        if match:
            q850, text, sip, sip_text, callback = match.groups()
            rows.append((int(q850), text, None if sip == "NULL" else int(sip), sip_text, int(callback)))
        else:
            assert not re.match(r"\s*\(\d", line), f"a row this test cannot read: {line!r}"
    return rows


def module_rows() -> list[tuple[int, str, int | None, str, int]]:
    return [(c.q850, c.q850_text, c.sip_code, c.sip_text, int(c.q850 in BY_Q850)) for c in Q850_CAUSES]


def test_the_migration_holds_exactly_the_modules_causes():
    assert migration_rows() == module_rows()


def test_the_causes_are_unique_and_include_the_seeds_fifteen():
    values = [c.q850 for c in Q850_CAUSES]
    assert values == sorted(set(values)) and all(0 <= v <= 127 for v in values)
    assert set(CALLBACK_HANGUP_CAUSES) <= set(Q850_CAUSES) and len(CALLBACK_HANGUP_CAUSES) == 15
    assert all(c.sip_code is not None for c in CALLBACK_HANGUP_CAUSES)


def test_sip_for_q850_answers_from_the_same_table():
    table = {c.q850: c.sip_code for c in Q850_CAUSES}
    assert all(sip_for_q850(v) == table.get(v) for v in range(256))
    assert (sip_for_q850(16), sip_for_q850(70), sip_for_q850(102)) == (None, 488, 504)
    assert all((c.sip_code is None) == (c.sip_text == "") for c in Q850_CAUSES)
