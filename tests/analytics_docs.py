"""What the analytics tests share: the queries and column lists as the Markdown documents state them,
and a small scenario of callbacks whose answers are known.

Queries are read from the documents themselves (``docs/analytics.md`` and ``README.md``), so what an
analyst copies is what the tests run. A query is a fenced ``sql`` block right after a
``<!-- query: name -->`` comment; a ``sql`` block without a name is an error, so none can be added
untested. The documents' date ranges end today (``today() - 7`` to ``today()``); ``on_day`` puts
one fixed day in their place instead.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from pathlib import Path

from rating_stream.loadgen import cards
from schemas.callback import Disposition, FinishedLeg, LegType, Payer, PayerKind, SessionState, leg_id_for

REPO_ROOT = Path(__file__).resolve().parent.parent
ANALYTICS = REPO_ROOT / "docs" / "analytics.md"
README = REPO_ROOT / "README.md"

_QUERY = re.compile(r"<!-- query: (\w+) -->\s*```sql\n(.*?)```", re.S)
_TABLE_HEADING = re.compile(r"^### `(callback\.\w+)`", re.M)
_COLUMN_ROW = re.compile(r"^\| `(\w+)` \| `([^`]+)` \|", re.M)
#: the range every documented query reads, as the documents write it
RANGE_START, RANGE_END = "today() - 7", "today()"
DID = "2349012345678"


def documented_queries(doc: Path) -> dict[str, str]:
    """name -> SQL of every query of ``doc``; fails when a ``sql`` block has no name."""
    text = doc.read_text(encoding="utf-8")
    found = {name: sql.strip().rstrip(";").strip() for name, sql in _QUERY.findall(text)}
    blocks = text.count("```sql")
    assert len(found) == len(_QUERY.findall(text)) == blocks, (
        f"{doc.name}: {blocks} sql blocks, {len(found)} named uniquely by <!-- query: name -->"
    )
    return found


def all_documented_queries() -> dict[str, str]:
    """Every query of docs/analytics.md and of the README, as ``file:name``."""
    return {
        f"{doc.name}:{name}": sql
        for doc in (ANALYTICS, README)
        for name, sql in documented_queries(doc).items()
    }


def on_day(sql: str, day: date) -> str:
    """``sql`` with its documented date range replaced by the single day ``day``."""
    assert RANGE_START in sql and RANGE_END in sql.replace(RANGE_START, ""), f"no date range in:\n{sql}"
    return sql.replace(RANGE_START, f"'{day}'").replace(RANGE_END, f"'{day}'")


def documented_columns(doc: Path = ANALYTICS) -> dict[str, list[tuple[str, str]]]:
    """table -> [(column, type)] as listed under each ``### `callback.x``` heading of ``doc``."""
    text = doc.read_text(encoding="utf-8")
    headings = list(_TABLE_HEADING.finditer(text))
    out = {}
    for here, after in zip(headings, headings[1:] + [None], strict=True):
        section = text[here.end() : after.start() if after else len(text)]
        section = section.split("\n## ", 1)[0]  # a table's list ends at the next chapter
        out[here.group(1)] = _COLUMN_ROW.findall(section)
    return out


class Scenario:
    """Builds legs of callbacks, a minute apart from ``start``, all through one DID."""

    def __init__(self, run: str, start: datetime) -> None:
        self.run, self.legs = run, []
        self.t = start
        self.owner = Payer(kind=PayerKind.CALLBACK_USER, id=f"{run}-owner")
        self.user = Payer(kind=PayerKind.USER, id=f"{run}-u0")
        self.card = Payer(kind=PayerKind.CARD, id=cards(run, 10)[0].number)

    def leg(
        self,
        cb: int,
        leg: LegType,
        dst: str,
        payer: Payer,
        final: SessionState,
        talk_s: int | None,
        disposition: Disposition = Disposition.ANSWERED,
        attempt: int = 0,
        cause: int | None = None,
    ) -> None:
        self.t += timedelta(minutes=1)
        answered = self.t + timedelta(seconds=5) if talk_s is not None else None
        if talk_s is None and disposition is Disposition.ANSWERED:
            disposition = Disposition.NO_ANSWER
        self.legs.append(
            FinishedLeg(
                source="test",
                leg_id=leg_id_for(f"{self.run}-{cb}", leg, attempt),
                callback_id=f"{self.run}-{cb}",
                leg=leg,
                attempt=attempt,
                did=DID,
                dst=dst,
                started_at=self.t,
                answered_at=answered,
                ended_at=(answered or self.t) + timedelta(seconds=talk_s or 3),
                disposition=disposition,
                q850_cause=cause,
                payer=payer,
                final_state=final,
            )
        )


def build(run: str, start: datetime) -> Scenario:
    """Six callbacks of every kind the documented queries tell apart, legs a minute apart."""
    s = Scenario(run, start)
    done, auth_failed, rejected, failed_b = (
        SessionState.COMPLETED,
        SessionState.AUTH_FAILED,
        SessionState.REJECTED,
        SessionState.FAILED_B,
    )
    # 1: a full callback, the seed's example: 1 min to Nigeria (0.20) + 1 min to Spain (0.08)
    s.leg(1, LegType.INITIATION, "2341234567", s.owner, done, None)
    s.leg(1, LegType.A, "2341234567", s.user, done, 60)
    s.leg(1, LegType.B, "34911234567", s.user, done, 60)
    # 2: no answer (19), retried, answered but never authenticated: the system owner pays 30 s (60/60)
    s.leg(2, LegType.INITIATION, "2341234567", s.owner, auth_failed, None)
    s.leg(2, LegType.A, "2341234567", s.owner, auth_failed, None, attempt=0, cause=19)
    s.leg(2, LegType.A, "2341234567", s.owner, auth_failed, 30, attempt=1)
    # 3-5: initiations refused (origins without a rate in the Callback Tariff)
    s.leg(3, LegType.INITIATION, "8821234", s.owner, rejected, None)
    s.leg(4, LegType.INITIATION, "8821234", s.owner, rejected, None)
    s.leg(5, LegType.INITIATION, "99912345", s.owner, rejected, None)
    # 6: a card holder, 2 min to the US (0.015/min, 6 s blocks), destination busy (17)
    s.leg(6, LegType.INITIATION, "12125550142", s.owner, failed_b, None)
    s.leg(6, LegType.A, "12125550142", s.card, failed_b, 120)
    s.leg(6, LegType.B, "442071234567", s.card, failed_b, None, Disposition.BUSY, cause=17)
    return s
