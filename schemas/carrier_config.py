"""A carrier's configuration file: the whole reference data in one YAML document.

``load_carrier_config`` validates it (types, ranges, and references between entities) and reports
every problem with the file, line and field path, so a carrier's engineer fixes the right line. A file
that is not UTF-8, or that repeats a key in a mapping (YAML would silently keep the last one), is
refused the same way, with the line.

AMI secrets are not reference data: they belong in the settings of the processes that log in to a
PBX (``ami.secrets.<server_id>``, see ``callback.settings``). A server entry may still carry
``ami_secret`` (files written before): it is accepted, kept only in ``legacy_ami_secrets`` for a
``--config`` producer or originator of this file, and never published (``records`` yields the
servers without it; ``callback config load`` warns).

Web credentials (``web_username``, ``web_password_hash``, ``api_key_sha256``) stay on the user entry
of the file, where a carrier manages its subscribers, but are published apart: ``records`` yields
each user on ``config.users`` without them and its credentials on ``auth.web_credentials``, the
topic only the web API reads (``schemas.credentials``; docs/architecture.md, "Credentials").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from schemas.credentials import WebCredentials, WebLogin
from schemas.envelope import Record
from schemas.reference import (
    AuthMethod,
    CallbackDialPlan,
    CallbackServer,
    CallbackSettings,
    CallingCard,
    Device,
    Did,
    Tariff,
    User,
)
from schemas.topics import (
    AUTH_WEB_CREDENTIALS,
    CONFIG_CARDS,
    CONFIG_DEVICES,
    CONFIG_DIALPLANS,
    CONFIG_DIDS,
    CONFIG_SERVERS,
    CONFIG_SETTINGS,
    CONFIG_TARIFFS,
    CONFIG_USERS,
)


class CarrierUser(User, WebLogin):
    """A user entry of the carrier file: the subscriber and, optionally, their web credentials."""

    def user(self) -> User:
        """The subscriber as ``config.users`` carries it: without the credentials."""
        return User.model_validate(self.model_dump(exclude=set(WebLogin.model_fields)))

    def web_credentials(self) -> WebCredentials:
        """The ``auth.web_credentials`` record of this user (every field None: no web access)."""
        return WebCredentials(user_id=self.user_id, **self.model_dump(include=set(WebLogin.model_fields)))


class CarrierConfig(Record):
    callback_settings: CallbackSettings
    servers: list[CallbackServer] = Field(min_length=1)
    tariffs: list[Tariff] = Field(min_length=1)
    users: list[CarrierUser] = Field(min_length=1)
    devices: list[Device] = Field(default_factory=list)
    cards: list[CallingCard] = Field(default_factory=list)
    dialplans: list[CallbackDialPlan] = Field(min_length=1)
    dids: list[Did] = Field(min_length=1)
    #: server_id -> ``ami_secret`` written in the file itself (deprecated; never published)
    _legacy_ami_secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_legacy_secrets(cls, data: Any, handler: Any) -> CarrierConfig:
        """``servers[].ami_secret`` of an older file: set aside (``CallbackServer`` drops it)."""
        secrets: dict[str, str] = {}
        if isinstance(data, dict) and isinstance(data.get("servers"), list):
            for server in data["servers"]:
                if isinstance(server, dict) and server.get("ami_secret") is not None:
                    secrets[str(server.get("server_id"))] = str(server["ami_secret"])
        config = handler(data)
        if isinstance(data, dict):  # not when re-validating a CarrierConfig: it keeps its own
            config._legacy_ami_secrets = secrets
        return config

    @property
    def legacy_ami_secrets(self) -> dict[str, str]:
        """server_id -> the AMI secret the file still carries (``ami_secret``, deprecated)."""
        return dict(self._legacy_ami_secrets)

    @model_validator(mode="after")
    def _references(self) -> CarrierConfig:
        """Every id an entity points at must exist, and ids must be unique."""
        problems: list[str] = []
        tariffs = _unique(self.tariffs, "tariff_id", "tariffs", problems)
        users = _unique(self.users, "user_id", "users", problems)
        devices = _unique(self.devices, "device_id", "devices", problems)
        servers = _unique(self.servers, "server_id", "servers", problems)
        dialplans = _unique(self.dialplans, "dialplan_id", "dialplans", problems)
        _unique(self.cards, "number", "cards", problems)
        _unique(self.dids, "number", "dids", problems)

        for i, user in enumerate(self.users):
            _ref(user.tariff_id, tariffs, f"users.{i}.tariff_id", "tariff", problems)
        for i, device in enumerate(self.devices):
            _ref(device.user_id, users, f"devices.{i}.user_id", "user", problems)
        for i, card in enumerate(self.cards):
            _ref(card.tariff_id, tariffs, f"cards.{i}.tariff_id", "tariff", problems)
        for i, did in enumerate(self.dids):
            _ref(did.dialplan_id, dialplans, f"dids.{i}.dialplan_id", "dial plan", problems)
            if did.pbx_id is not None:
                _ref(did.pbx_id, servers, f"dids.{i}.pbx_id", "server", problems)
        settings_scopes = [("callback_settings", self.callback_settings)]
        settings_scopes += [(f"dialplans.{i}.settings", d.settings) for i, d in enumerate(self.dialplans)]
        settings_scopes += [(f"dids.{i}.settings", d.settings) for i, d in enumerate(self.dids)]
        for path, settings in settings_scopes:
            if settings is not None and settings.callback_server_id is not None:
                _ref(settings.callback_server_id, servers, f"{path}.callback_server_id", "server", problems)

        system = self.callback_settings
        if system.scope != "system":
            problems.append("callback_settings.scope: the top-level settings must have scope 'system'")
        if system.callback_user_id is not None and system.callback_user_id not in users:
            problems.append(f"callback_settings.callback_user_id: no user {system.callback_user_id!r}")
        if system.callback_device_id is not None:
            device = devices.get(system.callback_device_id)
            if device is None:
                problems.append(
                    f"callback_settings.callback_device_id: no device {system.callback_device_id!r}"
                )
            elif device.user_id != system.callback_user_id:
                problems.append(
                    "callback_settings.callback_device_id: the Callback Device must belong to "
                    "the Callback User"
                )
        card_methods = {AuthMethod.CARD_NUMBER_PIN, AuthMethod.CARD_PIN, AuthMethod.CARD_PINLESS}
        for i, plan in enumerate(self.dialplans):
            if plan.auth_method in card_methods and not self.cards:
                problems.append(f"dialplans.{i}.auth_method: {plan.auth_method.value} needs calling cards")
        self._unambiguous_credentials(problems)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _unambiguous_credentials(self, problems: list[str]) -> None:
        """What a caller keys in or calls from must name one subscriber.

        A PIN or an ANI shared by two devices (or a pinless ANI shared by two cards) would
        authenticate whichever the processors happened to find first and charge the wrong
        account; the reference view refuses to pick one at run time, so the file is refused here,
        where the carrier can still fix it. Card PINs must be unique only when some dial plan
        authenticates by the card PIN alone: with card number + PIN, two cards may share one."""
        pins: dict[str, str] = {}
        numbers: dict[str, str] = {}
        for i, device in enumerate(self.devices):
            if device.pin:
                where = f"devices.{i}.pin"
                _claim(pins, device.pin, device.device_id, where, "PIN already used by device", problems)
            for j, number in enumerate(device.registered_numbers):
                where = f"devices.{i}.registered_numbers.{j}"
                taken = f"number {number} already registered to device"
                _claim(numbers, number, device.device_id, where, taken, problems)
        pin_plan = next((p for p in self.dialplans if p.auth_method is AuthMethod.CARD_PIN), None)
        card_pins: dict[str, str] = {}
        pinless: dict[str, str] = {}
        for i, card in enumerate(self.cards):
            if pin_plan is not None:
                where, why = f"cards.{i}.pin", f" (dial plan {pin_plan.dialplan_id!r} uses card PIN alone)"
                _claim(card_pins, card.pin, card.number, where, "PIN already used by card", problems, why)
            for j, number in enumerate(card.pinless_numbers):
                where = f"cards.{i}.pinless_numbers.{j}"
                taken = f"number {number} already a pinless number of card"
                _claim(pinless, number, card.number, where, taken, problems)
        # one web login, one user: a shared username or API key would let one in as the other
        usernames: dict[str, str] = {}
        api_keys: dict[str, str] = {}
        for i, user in enumerate(self.users):
            if user.web_username:
                where, taken = f"users.{i}.web_username", "web username already used by user"
                _claim(usernames, user.web_username, user.user_id, where, taken, problems)
            if user.api_key_sha256:
                where, taken = f"users.{i}.api_key_sha256", "API key already used by user"
                _claim(api_keys, user.api_key_sha256, user.user_id, where, taken, problems)

    @property
    def callback_user(self) -> User:
        return next(u for u in self.users if u.user_id == self.callback_settings.callback_user_id)

    def records(self) -> Iterator[tuple[str, str, Record]]:
        """(topic, key, value) of every record this file publishes: the reference data on
        ``config.*``, the users' web credentials on ``auth.web_credentials``."""
        yield CONFIG_SETTINGS.name, "system", self.callback_settings
        for server in self.servers:
            yield CONFIG_SERVERS.name, server.server_id, server
        for tariff in self.tariffs:
            yield CONFIG_TARIFFS.name, tariff.tariff_id, tariff
        for user in self.users:
            yield CONFIG_USERS.name, user.user_id, user.user()
        for device in self.devices:
            yield CONFIG_DEVICES.name, device.device_id, device
        for card in self.cards:
            yield CONFIG_CARDS.name, card.number, card
        for plan in self.dialplans:
            yield CONFIG_DIALPLANS.name, plan.dialplan_id, plan
        for did in self.dids:
            yield CONFIG_DIDS.name, did.number, did
        for user in self.users:  # every user, so credentials removed from the file are revoked
            yield AUTH_WEB_CREDENTIALS.name, user.user_id, user.web_credentials()


def _unique(items: list[Any], attr: str, section: str, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        key = getattr(item, attr)
        if key in out:
            problems.append(f"{section}.{i}.{attr}: duplicate {attr} {key!r}")
        out[key] = item
    return out


def _claim(
    owners: dict[str, str], value: str, owner: str, path: str, taken: str, problems: list[str], why: str = ""
) -> None:
    """Record ``owner`` as the holder of ``value``; a second, different holder is a problem
    (``<path>: <taken> '<first holder>'<why>``). One holder listing a value twice is harmless."""
    first = owners.setdefault(value, owner)
    if first != owner:
        problems.append(f"{path}: {taken} {first!r}{why}")


def _ref(value: str, known: dict[str, Any], path: str, what: str, problems: list[str]) -> None:
    if value not in known:
        problems.append(f"{path}: no {what} {value!r}")


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration file, located for a human."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def summary(self, shown: int = 5) -> str:
        """Every problem (the first ``shown`` of them) on one line, for a command's one-line error."""
        if len(self.problems) == 1:
            return str(self.problems[0])
        file = self.problems[0].file if self.problems else "configuration"
        text = "; ".join(str(p) for p in self.problems[:shown])
        more = len(self.problems) - shown
        tail = f"; and {more} more (`callback config load --dry-run {file}` lists them)" if more > 0 else ""
        return f"{file}: {len(self.problems)} problems: {text}{tail}"


def _node_line(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the deepest YAML node that ``loc`` reaches (the bad field, or its parent)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    child = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _duplicate_keys(root: yaml.Node | None, file: str) -> list[ConfigProblem]:
    """A key written twice in one mapping: YAML keeps the last silently, so one of them would be
    ignored without anybody knowing which; every repetition is a problem at its own line."""
    problems: list[ConfigProblem] = []
    pending: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while pending:
        node, path = pending.pop()
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                where = f"{path}.{key}" if path else key
                if key != "<<" and key in first:
                    problems.append(
                        ConfigProblem(
                            file, line, where, f"duplicate key {key!r} (first at line {first[key]})"
                        )
                    )
                else:
                    first.setdefault(key, line)
                pending.append((value_node, where))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                pending.append((item, f"{path}.{i}" if path else str(i)))
    return sorted(problems, key=lambda p: p.line or 0)


def _path_from_message(message: str) -> tuple[str, tuple[str | int, ...], str]:
    """Our cross-reference messages start with a dotted path; split it off so it can be located."""
    head, sep, rest = message.partition(": ")
    if not sep or " " in head:
        return "", (), message
    loc = tuple(int(p) if p.isdigit() else p for p in head.split("."))
    return head, loc, rest


def load_carrier_config(path: str | Path) -> CarrierConfig:
    """Parse and validate a carrier YAML file; raise ``ConfigError`` listing every problem with its line."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, None, "", f"cannot read: {exc.strerror}")]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = raw[exc.start : exc.start + 1].hex()
        message = f"not UTF-8 text: byte 0x{byte} at column {column} (save the file as UTF-8)"
        raise ConfigError([ConfigProblem(file, line, "", message)]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        duplicates = _duplicate_keys(root, file)
        if duplicates:
            raise ConfigError(duplicates)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            [ConfigProblem(file, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}")]
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(file, 1, "", "the file must be a mapping of sections")])
    try:
        return CarrierConfig.model_validate(data)
    except ValidationError as exc:
        problems: list[ConfigProblem] = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if not loc:  # cross-reference problems: one message each, joined by '; '
                for part in message.split("; "):
                    dotted, sub_loc, rest = _path_from_message(part)
                    problems.append(ConfigProblem(file, _node_line(root, sub_loc), dotted, rest))
                continue
            problems.append(ConfigProblem(file, _node_line(root, loc), ".".join(map(str, loc)), message))
        raise ConfigError(problems) from exc
