"""``callback quote`` prints the breakdown support staff need, from a carrier file (no servers)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from callback.cli import app

CARRIER = str(Path(__file__).resolve().parents[2] / "examples" / "carrier.yaml")


def run(*args: str):
    return CliRunner().invoke(app, ["quote", *args, "--config", CARRIER])


def test_quote_shows_every_term_and_the_price():
    result = run("--tariff", "retail-usd", "--number", "34612345678", "--seconds", "31.2")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "'346' Spain Mobile" in out and "0.12 USD/min" in out
    assert "billable 32 s -> billed 60 s" in out  # 30/30 blocks
    assert "price           0.1300 USD" in out  # 0.12 + 0.01 connection fee


def test_quote_of_the_seeds_nigeria_minute():
    result = run("--tariff", "retail-usd", "--number", "2341234567", "--seconds", "60")
    assert result.exit_code == 0 and "price           0.2000 USD" in result.output


def test_quote_refuses_unknown_tariff_number_and_bad_seconds():
    assert run("--tariff", "nope", "--number", "1", "--seconds", "1").exit_code == 1
    assert run("--tariff", "retail-usd", "--number", "999", "--seconds", "1").exit_code == 1
    assert run("--tariff", "retail-usd", "--number", "1", "--seconds", "-3").exit_code == 1
    assert run("--tariff", "retail-usd", "--number", "1", "--seconds", "abc").exit_code == 1
