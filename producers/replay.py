"""``callback ami-replay FILE.json``: a recorded AMI transcript through the live translation.

A transcript is a JSON array of AMI events, one object per event with every header a key (the
format of ``fixtures/asterisk-ami``). Each event goes through the same ``Translator`` and the same
duplicate filter as the live producer; the result is printed as JSON lines
``{"topic", "key", "value"}`` (rejects as ``{"reject": reason, "error_kind", "event"}``). No Kafka.

Time: transcripts recorded without ``timestampevents=yes`` carry no per-event time. Replay then uses
the newest channel-creation second seen so far in the file (Asterisk writes it into every Uniqueid,
``<system>-<epoch>.<seq>``): reproducible output, never earlier than the call itself, 1 s resolution.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producers.ami_fields import header, uniqueid_epoch
from producers.ami_translate import Publish, Reject, Translator
from producers.dedup import RecentKeys

_EPOCH_HEADERS = ("Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid")


class TranscriptError(ValueError):
    """The file is not a JSON array of AMI event objects."""


def load_transcript(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TranscriptError(f"{path}: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise TranscriptError(f"{path}: expected a JSON array of AMI event objects")
    return data


class UniqueidClock:
    """Replay clock: the newest Uniqueid epoch seen so far (see module docstring)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._epoch = int(start.timestamp()) if start else 0

    def observe(self, event: dict[str, Any]) -> datetime:
        for name in _EPOCH_HEADERS:
            epoch = uniqueid_epoch(header(event, name))
            if epoch is not None and epoch > self._epoch:
                self._epoch = epoch
        return datetime.fromtimestamp(self._epoch, UTC)


def replay(
    events: Iterable[dict[str, Any]], translator: Translator, dedup: RecentKeys | None = None
) -> Iterator[dict[str, Any]]:
    """The records the live producer would publish for ``events``, as JSON-ready dicts."""
    dedup = dedup or RecentKeys()
    clock = UniqueidClock()
    for event in events:
        read_at = clock.observe(event)
        for outcome in translator.translate(event, read_at):
            if isinstance(outcome, Reject):
                yield {"reject": outcome.reason, "error_kind": outcome.error_kind, "event": event}
            elif isinstance(outcome, Publish):
                if outcome.dedup_key is not None and dedup.seen(outcome.dedup_key):
                    continue
                yield {
                    "topic": outcome.topic,
                    "key": outcome.key,
                    "value": outcome.value.model_dump(mode="json"),
                }


def replay_file(path: Path, pbx_id: str, dids: Iterable[str] = ()) -> list[dict[str, Any]]:
    return list(replay(load_transcript(path), Translator(pbx_id=pbx_id, dids=frozenset(dids))))
