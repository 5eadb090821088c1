"""The callback settings that apply to one initiation, and the Callback Server they name. Pure.

The seed's settings (ADDONS -> Callback) are set once for the system and may be overridden per
callback dial plan and per access number (DID). An override sets only the fields it names; the
rest are inherited. Overrides come from two places, applied in this order, the most specific
last:

1. the system settings (``config.callback_settings`` scope ``system``);
2. the dial plan's own ``settings:``, then a ``dialplan:<id>`` record of ``config.callback_settings``;
3. the DID's own ``settings:``, then a ``did:<number>`` record of ``config.callback_settings``.
"""

from __future__ import annotations

from collections.abc import Mapping

from callback.reference import ReferenceData
from schemas.reference import CallbackDialPlan, CallbackServer, CallbackSettings, Did


class UnknownServer(LookupError):
    """The settings name a Callback Server that is not configured."""


def effective_settings(system: CallbackSettings, *overrides: CallbackSettings | None) -> CallbackSettings:
    """System settings with each scope's overrides applied in order (dial plan, then DID)."""
    settings = system
    for override in overrides:
        settings = settings.overlay(override)
    return settings


def settings_for(
    ref: ReferenceData, did: Did | None = None, dialplan: CallbackDialPlan | None = None
) -> CallbackSettings | None:
    """The settings in force for an initiation on ``did`` (None = a web callback: system only).

    None when there are no system settings at all (nothing has been configured yet)."""
    system = ref.system_settings()
    if system is None:
        return None
    overrides: list[CallbackSettings | None] = []
    if dialplan is not None:
        overrides += [dialplan.settings, ref.settings.get(f"dialplan:{dialplan.dialplan_id}")]
    if did is not None:
        overrides += [did.settings, ref.settings.get(f"did:{did.number}")]
    return effective_settings(system, *overrides)


def callback_server(settings: CallbackSettings, servers: Mapping[str, CallbackServer]) -> CallbackServer:
    """The PBX that gets the callback: the **Callback Server** setting, among the configured servers."""
    server_id = settings.callback_server_id
    if server_id is None:
        raise UnknownServer("no Callback Server set in the callback settings")
    try:
        return servers[server_id]
    except KeyError:
        raise UnknownServer(
            f"Callback Server {server_id!r} is not among the configured servers "
            f"({', '.join(sorted(servers)) or 'none'})"
        ) from None
