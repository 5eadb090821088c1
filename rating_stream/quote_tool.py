"""``callback quote``: the price of one leg with every term that made it, for support staff.

Every way it can fail is a ``QuoteError`` with a one-line message: an unreadable or invalid
``--config`` file, a tariff that is not there, ``--seconds`` that is not a number a leg can last,
and Kafka not answering (checked first, within seconds, instead of a consumer retrying for 30 s).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path

from rating_stream.engine import CompiledTariff, RatingError, quote


class QuoteError(Exception):
    pass


#: the longest answered time a CDR stores (``billsec`` is a UInt32 column): a longer leg cannot exist
MAX_SECONDS = Decimal(2**32 - 1)
NO_KAFKA_HINT = (
    "start the local stack with `callback stack up`, "
    "or read the tariff from a carrier file with --config FILE"
)


def load_tariff(tariff_id: str, config: Path | None) -> CompiledTariff:
    """The tariff from a carrier YAML file, or else from the ``config.tariffs`` topic."""
    if config is not None:
        from schemas.carrier_config import ConfigError, load_carrier_config

        try:
            tariffs = {t.tariff_id: t for t in load_carrier_config(config).tariffs}
        except ConfigError as exc:
            raise QuoteError(exc.summary()) from None
        if tariff_id not in tariffs:
            raise QuoteError(f"tariff {tariff_id!r} is not in {config} (has: {', '.join(sorted(tariffs))})")
        return CompiledTariff.build(tariffs[tariff_id])
    from confluent_kafka import KafkaException

    from callback.kafka_io import KafkaUnreachable, check_reachable
    from callback.reference_feed import ReferenceFeed
    from schemas.topics import CONFIG_TARIFFS

    try:
        check_reachable(timeout_s=5.0, hint=NO_KAFKA_HINT)
    except KafkaUnreachable as exc:
        raise QuoteError(str(exc)) from None
    feed = ReferenceFeed((CONFIG_TARIFFS.name,))
    try:
        data = feed.load(timeout_s=30)
    except (KafkaException, TimeoutError) as exc:
        detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        raise QuoteError(f"cannot read {CONFIG_TARIFFS.name}: {detail}") from None
    finally:
        feed.close()
    if tariff_id not in data.tariffs:
        raise QuoteError(
            f"tariff {tariff_id!r} is not on config.tariffs (has: {', '.join(sorted(data.tariffs))})"
        )
    return data.tariffs[tariff_id]


def parse_seconds(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise QuoteError(f"--seconds {text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise QuoteError("--seconds must be a finite number >= 0")
    if value > MAX_SECONDS:
        raise QuoteError(f"--seconds {text} is too long: a leg lasts at most {MAX_SECONDS} s")
    return value


def format_quote(tariff: CompiledTariff, number: str, seconds: Decimal) -> str:
    if seconds < 0 or seconds > MAX_SECONDS:
        raise QuoteError(f"seconds must be between 0 and {MAX_SECONDS}")
    billsec_ms = int((seconds * 1000).to_integral_value(rounding=ROUND_CEILING))
    try:
        q = quote(tariff, number, billsec_ms, answered=True)
    except RatingError as exc:
        raise QuoteError(exc.reason) from None
    r = q.rate
    lines = [
        f"tariff          {q.tariff_id} ({q.currency}, {tariff.tariff.precision} decimal places)",
        f"number          {number}",
        f"matched prefix  {r.prefix!r} {r.destination}".rstrip(),
        f"rate            {r.rate_per_minute} {q.currency}/min",
        f"connection fee  {r.connection_fee}",
        f"billing         {r.minimal_time_s}/{r.increment_s} (minimal/increment s), grace {r.grace_time_s} s",
        f"answered        {seconds} s -> billable {q.billable_s} s -> billed {q.billed_s} s",
        f"duration charge {q.duration_charge.normalize() if q.duration_charge else 0}",
        f"fee charged     {q.connection_fee}",
        f"price           {q.price} {q.currency}",
    ]
    return "\n".join(lines)
