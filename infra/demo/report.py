"""The demo's checks and report: every callback, originate and charge against the plan, to the cent.

Charges are checked three ways, each from a different source, and must agree exactly:

* **expected**: every finished leg of the run priced here with the rating engine (``quote`` on the
  payer's tariff, ``payer_terms``), independently of the rater;
* **rater**: each payer's balance before the demo minus its balance after, from ``accounts.balances``
  (and the number of charges, ``sequence``, against the number of legs with a price);
* **ClickHouse**: ``sum(price)`` of the run's CDRs in ``callback.cdr FINAL``, and one row per leg.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from callback.reference import ReferenceData
from rating_stream.engine import RatingError, quote
from rating_stream.payer import payer_terms
from schemas.callback import FinishedLeg

ZERO = Decimal(0)


def _clickhouse() -> Any:
    from callback.clickhouse_io import clickhouse_client

    return clickhouse_client()


def _in_list(ids: list[str]) -> str:
    return ", ".join("'" + i.replace("'", "") + "'" for i in ids)


def stored_legs(ids: list[str]) -> int:
    if not ids:
        return 0
    client = _clickhouse()
    try:
        return client.execute(
            f"SELECT count() FROM callback.cdr FINAL WHERE callback_id IN ({_in_list(ids)})"
        )[0][0]
    finally:
        client.disconnect()


def wait_for_cdrs(ids: list[str], legs: int, timeout_s: float, tick: Callable[[], None]) -> int:
    """Wait until ClickHouse holds ``legs`` CDRs of the callbacks ``ids``; the count reached."""
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        try:
            count = stored_legs(ids)
        except Exception:  # noqa: BLE001 - ClickHouse paused or restarting: try again
            count = count
        if count >= legs:
            return count
        tick()
        time.sleep(0.5)
    return count


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    by_kind: list[tuple[str, int, int, int]] = field(default_factory=list)  # kind, planned, as expected, not
    mismatches: list[str] = field(default_factory=list)
    charges: list[tuple[str, Decimal, Decimal, Decimal, int, int]] = field(default_factory=list)
    callback_user_unauthenticated: Decimal = ZERO
    totals: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    retries: int = 0
    changes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def build(result: dict[str, Any]) -> Outcome:
    plan, ids, observed = result["plan"], result["ids"], result["observed"]
    out = Outcome(events=result["events"], changes=plan.changes)
    ref = ReferenceData.from_carrier_config(result["config"])
    originated = Counter(
        (e.get("Channel") or "").removeprefix("Local/").partition("@")[0] for e in result["actions"]
    )
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    legs: list[FinishedLeg] = []
    for call in plan.callbacks:
        row = per_kind[call.kind.value]
        row[0] += 1
        cb = ids.get(call.index)
        problems = []
        if cb is None:
            problems.append("not accepted by the web API")
        else:
            final = observed.final(cb)
            exp = call.expected
            if final is None:
                problems.append("no outcome")
            elif final["to_state"] != exp.state or (exp.reason and final["reason"] != exp.reason):
                problems.append(
                    f"ended {final['to_state']} ({final['reason']}), expected {exp.state}"
                    + (f" ({exp.reason})" if exp.reason else "")
                )
            got = {leg_id.removeprefix(cb + ":"): leg for leg_id, leg in observed.legs.get(cb, {}).items()}
            if set(got) != set(exp.payers):
                problems.append(f"legs {sorted(got)}, expected {sorted(exp.payers)}")
            for name, payer in exp.payers.items():
                leg = got.get(name)
                if leg is not None and f"{leg['payer']['kind']}:{leg['payer']['id']}" != payer:
                    problems.append(
                        f"leg {name} paid by {leg['payer']['kind']}:{leg['payer']['id']}, expected {payer}"
                    )
            legs += [FinishedLeg.model_validate(leg) for leg in got.values()]
            out.retries += sum(
                1
                for t in observed.transitions.get(cb, {}).values()
                if t["to_state"] == "scheduled" and t["attempt"] > 1
            )
        if call.number is not None:
            n = originated.get(call.number, 0)
            if n != call.expected.originates:
                problems.append(f"originated {n} time(s), expected {call.expected.originates}")
        if problems:
            row[2] += 1
            out.mismatches.append(f"#{call.index} {call.kind.value} ({cb}): " + "; ".join(problems))
        else:
            row[1] += 1
    out.by_kind = [(kind, *counts) for kind, counts in per_kind.items()]
    out.checks.append(
        Check(
            "every callback ended as planned, with its legs, payers and originates",
            not out.mismatches,
            f"{len(out.mismatches)} differ",
        )
    )
    _charges(out, ref, legs, ids, result["opening"])
    _latency(out, observed, list(ids.values()))
    out.totals["seconds"] = round(result["seconds"], 1)
    out.totals["restarts"] = result["restarts"]
    out.totals["legs published (copies included)"] = observed.published_legs
    return out


def _charges(
    out: Outcome,
    ref: ReferenceData,
    legs: list[FinishedLeg],
    ids: dict[int, str],
    opening: dict[str, tuple[Decimal, int]],
) -> None:
    from rating_stream.rater import read_balances

    expected: dict[str, Decimal] = defaultdict(lambda: ZERO)
    charged_legs: Counter[str] = Counter()
    for leg in legs:
        try:
            terms = payer_terms(leg.payer, ref)
            price = quote(terms.tariff, leg.dst, leg.billsec_ms, leg.answered_at is not None).price
        except RatingError as exc:
            out.checks.append(Check(f"leg {leg.leg_id} can be priced", False, exc.reason))
            continue
        expected[leg.payer.key] += price
        if price > 0:
            charged_legs[leg.payer.key] += 1
        if leg.payer.kind.value == "callback_user" and leg.leg.value == "a":
            out.callback_user_unauthenticated += price
    after = read_balances()
    client = _clickhouse()
    try:
        cb_list = _in_list(list(ids.values())) or "''"
        rows = client.execute(
            "SELECT payer_kind, payer_id, sum(price), count() FROM callback.cdr FINAL "
            f"WHERE callback_id IN ({cb_list}) GROUP BY payer_kind, payer_id"
        )
        per_leg = client.execute(
            f"SELECT leg_id, count() FROM callback.cdr WHERE callback_id IN ({cb_list}) GROUP BY leg_id "
            "HAVING count() > 1"
        )
        total_final = client.execute(
            f"SELECT count(), sum(price) FROM callback.cdr FINAL WHERE callback_id IN ({cb_list})"
        )[0]
    finally:
        client.disconnect()
    stored = {f"{kind}:{pid}": (Decimal(total), count) for kind, pid, total, count in rows}
    all_ok = once = True
    for key in sorted(set(expected) | set(stored)):
        exp = expected.get(key, ZERO).quantize(Decimal("0.0001"))
        ch_total = stored.get(key, (ZERO, 0))[0].quantize(Decimal("0.0001"))
        update = after.get(key)
        start, start_sequence = opening.get(key, (_configured_balance(ref, key), 0))
        rater = (start - update.balance).quantize(Decimal("0.0001")) if update is not None else ZERO
        charges = update.sequence - start_sequence if update is not None else 0
        all_ok &= exp == ch_total == rater
        once &= charges == charged_legs.get(key, 0)
        out.charges.append((key, exp, rater, ch_total, charged_legs.get(key, 0), charges))
    out.checks.append(Check("charges per payer: expected = rater = ClickHouse, to the cent", all_ok))
    out.checks.append(Check("every leg with a price charged exactly once (the rater's charge count)", once))
    out.checks.append(
        Check(
            "one CDR per leg in ClickHouse",
            total_final[0] == len(legs),
            f"{total_final[0]} CDRs (FINAL) for {len(legs)} legs",
        )
    )
    out.totals["CDR rows stored more than once (before FINAL merges them)"] = len(per_leg)
    out.totals["sum of CDR prices (FINAL)"] = Decimal(total_final[1] or 0)
    out.totals["legs"] = len(legs)


def _configured_balance(ref: ReferenceData, key: str) -> Decimal:
    kind, _, ident = key.partition(":")
    if kind == "card":
        card = ref.cards.get(ident)
        return card.balance if card else ZERO
    user = ref.users.get(ident)
    return user.balance if user else ZERO


def _latency(out: Outcome, observed: Any, ids: list[str]) -> None:
    first: list[float] = []
    ivr: list[float] = []
    for cb in ids:
        cmds = sorted(ts for ts, c in observed.commands.get(cb, {}).values())
        originates = sorted(
            ts for ts, c in observed.commands.get(cb, {}).values() if c["type"] == "pbx.originate"
        )
        start = observed.requests_ms.get(cb)
        if start is not None and originates:
            first.append(originates[0] - start)
        for ts in observed.ivr_inputs.get(cb, {}).values():
            nxt = next((c for c in cmds if c >= ts), None)
            if nxt is not None:
                ivr.append(nxt - ts)
    for name, values in (("initiation -> first originate", first), ("IVR input -> next command", ivr)):
        out.latency[f"{name} p50 ms"] = _percentile(values, 0.5)
        out.latency[f"{name} p99 ms"] = _percentile(values, 0.99)


# --- rendering ------------------------------------------------------------------------------------


@contextmanager
def live_progress(total: int) -> Iterator[Callable[..., None]]:
    """A live line of counts while the demo runs (rich), and the function that refreshes it."""
    from rich.console import Console, Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    console = Console(stderr=True)
    started = time.monotonic()

    def table(observed: Any, ids: dict[int, str], events: list[str]) -> Group:
        finals = [observed.final(cb) for cb in ids.values()]
        done = [f for f in finals if f is not None]
        completed = sum(1 for f in done if f["to_state"] == "completed")
        retried = sum(
            1
            for cb in ids.values()
            for t in observed.transitions.get(cb, {}).values()
            if t["to_state"] == "scheduled" and t["attempt"] > 1
        )
        elapsed = max(0.1, time.monotonic() - started)
        grid = Table.grid(padding=(0, 2))
        grid.add_row(
            "placed",
            f"{len(ids)}/{total}",
            "completed",
            str(completed),
            "other outcomes",
            str(len(done) - completed),
            "in progress",
            str(len(ids) - len(done)),
            "retries",
            str(retried),
            "rate",
            f"{len(ids) / elapsed:.1f}/s",
        )
        return Group(grid, Text("\n".join(events[-3:]), style="dim"))

    with Live(console=console, refresh_per_second=4, transient=False) as live:

        def refresh(observed: Any, ids: dict[int, str], events: list[str]) -> None:
            live.update(table(observed, ids, events))

        yield refresh


def render_console(out: Outcome) -> None:
    from rich.console import Console

    print(render_markdown(out, None))
    Console().print("[bold green]demo OK[/]" if out.ok else "[bold red]demo FAILED[/]")


def render_markdown(out: Outcome, opts: Any) -> str:
    lines = ["# Callback demo report", ""]
    if opts is not None:
        lines += [
            f"{opts.callbacks} callbacks over {opts.over_s:.0f} s, seed {opts.seed}, simulator speed "
            f"{opts.speed}, chaos {'on' if opts.chaos else 'off'}.",
            "",
        ]
    lines += ["Carrier: `examples/carrier.yaml`, with: " + "; ".join(out.changes) + ".", ""]
    lines += (
        ["## Checks", ""]
        + [
            f"- {'PASS' if c.ok else 'FAIL'} {c.name}" + (f" ({c.detail})" if c.detail else "")
            for c in out.checks
        ]
        + [""]
    )
    lines += ["## Outcomes per kind", "", "| kind | planned | as expected | different |", "|---|---|---|---|"]
    lines += [f"| {k} | {p} | {a} | {d} |" for k, p, a, d in sorted(out.by_kind)] + [""]
    lines += [f"Leg-A retries: {out.retries}.", ""]
    if out.mismatches:
        lines += ["### Differences", ""] + [f"- {m}" for m in out.mismatches[:50]] + [""]
    lines += [
        "## Charges per payer",
        "",
        "| payer | expected | rater (balance before - after) | ClickHouse (FINAL) | legs charged "
        "| charges by the rater |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {k} | {e} | {r} | {c} | {n} | {s} |" for k, e, r, c, n, s in out.charges] + [""]
    lines += [f"The Callback User paid {out.callback_user_unauthenticated} for unauthenticated legs A.", ""]
    lines += ["## Totals", ""] + [f"- {k}: {v}" for k, v in out.totals.items()] + [""]
    lines += (
        ["## Latency (Kafka record times)", ""] + [f"- {k}: {v:.0f}" for k, v in out.latency.items()] + [""]
    )
    if out.events:
        lines += ["## What happened", ""] + [f"- {e}" for e in out.events] + [""]
    return "\n".join(lines)
