"""Faust gets its Kafka connection from the same settings as every other client; start-up checks."""

from __future__ import annotations

import socket

import faust
import pytest

from callback.settings import KafkaSettings, Settings
from processors.app import broker_credentials, broker_urls
from processors.run import REQUIRED_TOPICS, StartupError, check_ports, check_topics


def test_bootstrap_servers_become_faust_broker_urls():
    kafka = KafkaSettings(bootstrap_servers="k1.example.net:9092, k2.example.net:9093")
    assert broker_urls(kafka) == ["kafka://k1.example.net:9092", "kafka://k2.example.net:9093"]


def test_plaintext_needs_no_credentials():
    assert broker_credentials(KafkaSettings()) is None


def test_sasl_settings_become_faust_sasl_credentials():
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        extra={"sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "callback", "sasl.password": "s3cret"},
    )
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("callback", "s3cret")
    assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.ssl_context is None


def test_sasl_ssl_carries_a_tls_context():
    kafka = KafkaSettings(security_protocol="SASL_SSL", extra={"sasl.username": "u", "sasl.password": "p"})
    credentials = broker_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials) and credentials.ssl_context is not None


def test_an_unknown_security_protocol_is_refused_by_name():
    with pytest.raises(ValueError, match="KERBEROS"):
        broker_credentials(KafkaSettings(security_protocol="KERBEROS"))


def test_a_taken_web_port_is_one_clear_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(processors={"web_port": port})
        with pytest.raises(StartupError, match=f"web port {port} is in use"):
            check_ports(settings)


def test_missing_topics_are_named_with_the_command_that_creates_them():
    present = {name: 1 for name in REQUIRED_TOPICS if name != "callback.control"}
    with pytest.raises(StartupError, match=r"callback\.control.*callback topics apply"):
        check_topics(Settings(), present)
    check_topics(Settings(), {name: 1 for name in REQUIRED_TOPICS})  # all there: no complaint
