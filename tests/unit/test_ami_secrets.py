"""AMI secrets come from the settings of the processes that log in, not from the reference data.

Where a PBX's secret is looked up, in order: ``--secret`` / ``CALLBACK_AMI_SECRET`` (producer, one
PBX), the settings' ``ami.secrets.<server_id>`` (YAML file or ``CALLBACK_AMI__SECRETS__<ID>``), and
last the deprecated ``ami_secret`` a ``--config`` carrier file still carries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from callback.cli import app
from callback.settings import get_settings
from infra.rig import ami_secret_env
from producers import reference_data
from producers.originator import AmiPool
from producers.reference_data import MissingAmiSecret, resolve_ami_endpoint
from tests.rigs import carrier_config_for

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "carrier.yaml"


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean slate of AMI settings; ``get_settings`` re-read after every change the test makes."""
    import os

    for name in list(os.environ):
        if name.startswith("CALLBACK_AMI"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CALLBACK_SETTINGS_FILE", raising=False)
    monkeypatch.setattr(reference_data, "_warned_legacy", set())
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def _set(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def test_secrets_from_the_environment_match_server_ids_in_any_case(settings_env):
    _set(settings_env, CALLBACK_AMI__SECRETS__PBX1="one", **{"CALLBACK_AMI__SECRETS__PBX-EAST.2": "two"})
    ami = get_settings().ami
    assert (ami.secret_for("pbx1"), ami.secret_for("PBX1"), ami.secret_for("pbx-East.2")) == (
        "one",
        "one",
        "two",
    )
    assert ami.secret_for("pbx3") is None
    assert "one" not in repr(get_settings())  # a settings dump in a log shows no secret


def test_secrets_from_the_settings_file_and_the_environment_merge(settings_env, tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({"ami": {"secrets": {"pbx1": "from-file", "pbx2": 1234}}}))
    _set(settings_env, CALLBACK_SETTINGS_FILE=str(path), CALLBACK_AMI__SECRETS__PBX2="from-env")
    ami = get_settings().ami
    assert (ami.secret_for("pbx1"), ami.secret_for("pbx2")) == ("from-file", "from-env")


def test_the_producer_takes_the_secret_from_the_settings(settings_env, tmp_path):
    config = carrier_config_for(tmp_path / "c.yaml", {"pbx1": ("10.0.0.1", 5038)}, secret_in_file=False)
    _set(settings_env, **ami_secret_env("pbx1", "from-settings"))
    endpoint = resolve_ami_endpoint("pbx1", config=config, host=None, port=None, username=None, secret=None)
    assert (endpoint.host, endpoint.port, endpoint.username, endpoint.secret) == (
        "10.0.0.1",
        5038,
        "callback",
        "from-settings",
    )
    # --secret / CALLBACK_AMI_SECRET still wins, for the one PBX of this producer
    flagged = resolve_ami_endpoint("pbx1", config=config, host=None, port=None, username=None, secret="flag")
    assert flagged.secret == "flag"
    assert "from-settings" not in str(endpoint)


def test_flags_and_settings_together_need_no_configuration_at_all(settings_env):
    _set(settings_env, **ami_secret_env("pbx7", "s"))
    endpoint = resolve_ami_endpoint("pbx7", config=None, host="h", port=1, username="u", secret=None)
    assert (endpoint.host, endpoint.secret) == ("h", "s")  # config.servers was not read (no Kafka here)


def test_an_older_carrier_file_still_works_for_its_own_processes(settings_env, tmp_path, caplog):
    config = carrier_config_for(tmp_path / "c.yaml", {"pbx1": ("10.0.0.1", 5038)}, secret="in-file")
    endpoint = resolve_ami_endpoint("pbx1", config=config, host=None, port=None, username=None, secret=None)
    assert endpoint.secret == "in-file"
    assert "deprecated" in caplog.text
    _set(settings_env, **ami_secret_env("pbx1", "from-settings"))  # the settings win over the file
    endpoint = resolve_ami_endpoint("pbx1", config=config, host=None, port=None, username=None, secret=None)
    assert endpoint.secret == "from-settings"


def test_no_secret_anywhere_is_one_clear_error(settings_env, tmp_path):
    config = carrier_config_for(tmp_path / "c.yaml", {"pbx1": ("10.0.0.1", 5038)}, secret_in_file=False)
    with pytest.raises(MissingAmiSecret) as info:
        resolve_ami_endpoint("pbx1", config=config, host=None, port=None, username=None, secret=None)
    text = str(info.value)
    assert "ami.secrets.pbx1" in text and "CALLBACK_AMI__SECRETS__PBX1" in text and "--secret" in text
    result = CliRunner().invoke(app, ["producer", "--pbx", "pbx1", "--config", str(config), "--dids", ""])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "no AMI secret for PBX pbx1" in result.stderr


def test_the_originator_pool_reads_settings_then_the_files_secret(settings_env):
    pool = AmiPool(legacy_secrets={"pbx2": "in-file"}, legacy_source="c.yaml")
    _set(settings_env, **ami_secret_env("pbx1", "from-settings"))
    assert (pool.secret("pbx1"), pool.secret("pbx2"), pool.secret("pbx3")) == (
        "from-settings",
        "in-file",
        None,
    )


def test_config_load_publishes_no_secret_and_warns_once(settings_env, tmp_path):
    config = carrier_config_for(tmp_path / "old.yaml", {"pbx1": ("h", 1), "pbx2": ("h", 2)}, secret="x")
    result = CliRunner().invoke(app, ["config", "load", "--dry-run", str(config)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "ami_secret" in line]
    assert len(warnings) == 1
    assert "pbx1, pbx2" in warnings[0] and "not published" in warnings[0] and "ami.secrets" in warnings[0]
    clean = CliRunner().invoke(app, ["config", "load", "--dry-run", str(SAMPLE)])
    assert clean.exit_code == 0 and "ami_secret" not in clean.stderr


def test_the_originator_pool_follows_config_servers_changes_and_deletions():
    """``AmiPool.sync`` takes each new view of config.servers: a changed server is logged in again
    on next use, a deleted one is logged out and no longer configured."""
    from schemas.reference import CallbackServer

    class FakeManager:
        closed = False

        def close(self) -> None:
            self.closed = True

    def server(server_id: str, host: str) -> CallbackServer:
        return CallbackServer(server_id=server_id, ami_host=host, ami_username="callback")

    pool = AmiPool()
    pool.sync({"pbx1": server("pbx1", "h1"), "pbx2": server("pbx2", "h2")})
    one, two = FakeManager(), FakeManager()
    pool._managers.update(pbx1=one, pbx2=two)  # type: ignore[dict-item]
    pool.sync({"pbx1": server("pbx1", "h1"), "pbx2": server("pbx2", "h2")})
    assert not one.closed and not two.closed, "an unchanged server keeps its login"
    pool.sync({"pbx1": server("pbx1", "h1-new")})
    assert one.closed and two.closed
    assert set(pool.servers) == {"pbx1"} and pool.servers["pbx1"].ami_host == "h1-new"
    assert pool._managers == {}
