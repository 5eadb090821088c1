"""Reference data the AMI side needs: servers, access numbers (DIDs), users, callback settings.

Two sources, the same shapes (``schemas.reference``): a carrier YAML (``--config``, for tests and
small deployments) or the compacted ``config.*`` topics, folded by ``callback.reference`` like in
every other process: read from the beginning at start and then followed
(``callback.reference_feed.ReferenceFollower``), so a DID added with ``callback config load``
becomes an access number without a restart.

AMI secrets are not reference data (``config.servers`` carries host, port, user and contexts only):
``ami_secret_for`` takes a PBX's secret from the settings (``ami.secrets.<server_id>``, e.g.
``CALLBACK_AMI__SECRETS__PBX1``), else from the ``ami_secret`` a ``--config`` carrier file still
carries (deprecated: warned once per PBX).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException

from callback.settings import get_settings
from schemas.carrier_config import CarrierConfig, load_carrier_config
from schemas.reference import CallbackServer
from schemas.topics import CONFIG_SERVERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AmiEndpoint:
    pbx_id: str
    host: str
    port: int
    username: str
    secret: str

    def __str__(self) -> str:  # never print the secret
        return f"{self.pbx_id} ({self.username}@{self.host}:{self.port})"


class MissingAmiSecret(ValueError):
    """No secret to log in to a PBX with; the message says where to put one."""

    def __init__(self, server_id: str, *, flag: bool = False) -> None:
        self.server_id = server_id
        also = ", or pass --secret / CALLBACK_AMI_SECRET" if flag else ""
        super().__init__(
            f"no AMI secret for PBX {server_id}: set ami.secrets.{server_id} in the settings file "
            f"(CALLBACK_SETTINGS_FILE) or CALLBACK_AMI__SECRETS__{_env_name(server_id)}=...{also}"
        )


def _env_name(server_id: str) -> str:
    return server_id.upper()


_warned_legacy: set[str] = set()


def ami_secret_for(server_id: str, legacy: Mapping[str, str] | None = None, source: str = "") -> str | None:
    """The AMI secret of ``server_id``: the settings' ``ami.secrets``, else ``legacy`` (the secrets a
    carrier file still carries, deprecated: warned once per PBX), else None."""
    secret = get_settings().ami.secret_for(server_id)
    if secret is not None:
        return secret
    if legacy and server_id in legacy:
        if server_id not in _warned_legacy:
            _warned_legacy.add(server_id)
            log.warning(
                "PBX %s: using the ami_secret of %s (deprecated: put it in the settings, "
                "ami.secrets.%s or CALLBACK_AMI__SECRETS__%s, and remove it from the file)",
                server_id,
                source or "the carrier file",
                server_id,
                _env_name(server_id),
            )
        return legacy[server_id]
    return None


def endpoint_of(server: CallbackServer, secret: str) -> AmiEndpoint:
    return AmiEndpoint(server.server_id, server.ami_host, server.ami_port, server.ami_username, secret)


def load_config(path: Path) -> CarrierConfig:
    return load_carrier_config(path)


def servers_from_topic(timeout_s: float = 30.0) -> dict[str, CallbackServer]:
    """Every configured Callback Server, read once from ``config.servers`` (the shared fold,
    ``callback.reference_feed``); what was read so far, with a warning, if that fails."""
    from callback.reference_feed import ReferenceFeed

    feed = ReferenceFeed((CONFIG_SERVERS.name,), purpose="servers")
    try:
        feed.load(timeout_s)
    except (KafkaException, TimeoutError) as exc:
        log.warning("config.servers not read to its end: %s", exc)
    finally:
        feed.close()
    return dict(feed.data.servers)


def resolve_ami_endpoint(
    pbx: str,
    *,
    config: Path | None,
    host: str | None,
    port: int | None,
    username: str | None,
    secret: str | None,
) -> AmiEndpoint:
    """Where PBX ``pbx`` listens: the config file or ``config.servers``, each field overridable by flag/env.

    The secret: ``secret`` (``--secret`` / ``CALLBACK_AMI_SECRET``), else the settings
    (``ami.secrets.<pbx>``), else the deprecated ``ami_secret`` of the ``config`` file; none of them
    is an error (``MissingAmiSecret``). When host, port, username and secret are all known from flags
    and settings, no configuration is read at all.
    """
    if secret is None:
        secret = ami_secret_for(pbx)
    if host and port and username and secret is not None:
        return AmiEndpoint(pbx, host, port, username, secret)
    legacy: dict[str, str] = {}
    if config is not None:
        carrier = load_config(config)
        servers = {s.server_id: s for s in carrier.servers}
        legacy = carrier.legacy_ami_secrets
    else:
        servers = servers_from_topic()
    if pbx not in servers:
        raise SystemExit(
            f"PBX {pbx!r} is not a configured Callback Server ({', '.join(sorted(servers)) or 'none'})"
        )
    if secret is None:
        secret = ami_secret_for(pbx, legacy, str(config))
    if secret is None:
        raise MissingAmiSecret(pbx, flag=True)
    base = endpoint_of(servers[pbx], secret)
    return AmiEndpoint(pbx, host or base.host, port or base.port, username or base.username, secret)
