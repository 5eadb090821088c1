"""Small builders of valid contract objects that several test modules need."""

from __future__ import annotations

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
