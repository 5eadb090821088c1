"""Small builders of valid contract objects that several test modules need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.reference import CallbackSettings


def system_settings(**overrides: Any) -> CallbackSettings:
    """Complete system-scope callback settings (every field the seed lists), with ``overrides``."""
    fields: dict[str, Any] = dict(
        scope="system",
        active_for_users=True,
        max_retries=3,
        retry_time_s=30,
        wait_time_s=30,
        callback_server_id="pbx1",
        send_device_cid=False,
        send_source_as_cid=False,
        callback_user_id="owner",
        callback_device_id="dev",
        pin_attempts=3,
        initiation_ring_s=3,
    )
    fields.update(overrides)
    return CallbackSettings(**fields)


#: the sample carrier file every carrier-file test starts from
SAMPLE_CARRIER = Path(__file__).resolve().parents[1] / "examples" / "carrier.yaml"


def broken_carrier(tmp_path: Path, old: str, new: str) -> Path:
    """The sample carrier file with its first ``old`` replaced by ``new``, written under ``tmp_path``."""
    text = SAMPLE_CARRIER.read_text()
    assert old in text, f"sample no longer contains {old!r}"
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def line_of(path: Path, needle: str) -> int:
    """The 1-based number of the first line of ``path`` that contains ``needle``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)
