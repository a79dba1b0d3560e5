"""The server's settings are the one place defaults live: the broker's and the Kafka engine's
configurations are built from them by field name, and the rules between settings are checked
when the settings are made (so the CLI, EDDY_* variables and `create_app` all get them)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from eddy.app.factory import broker_config
from eddy.app.settings import Settings, settings_for
from eddy.broker import BrokerConfig
from eddy.storage.kafka_client import KafkaSettings

KAFKA: dict[str, Any] = {"engine": "kafka", "kafka_bootstrap_servers": "127.0.0.1:9092"}


@pytest.mark.parametrize("config", [BrokerConfig, KafkaSettings])
def test_the_configurations_have_no_defaults_of_their_own(config: type) -> None:
    for f in dataclasses.fields(config):
        assert f.default is dataclasses.MISSING, f.name
        assert f.default_factory is dataclasses.MISSING, f.name


def test_the_broker_config_is_the_settings_by_field_name() -> None:
    settings = Settings(max_topics=7, sse_send_timeout=3.5, cors_origins="https://a.example/")
    config = broker_config(settings)
    assert config.max_topics == 7 and config.sse_send_timeout == 3.5
    assert config.origins == ("https://a.example",)
    assert config.topic_defaults["retention.ms"] == settings.default_retention_ms
    derived = {"topic_defaults"}
    for f in dataclasses.fields(BrokerConfig):
        if f.name not in derived:
            assert getattr(config, f.name) == getattr(settings, f.name), f.name


def test_the_kafka_settings_are_the_kafka_settings_by_field_name() -> None:
    settings = Settings(**KAFKA, kafka_namespace="n.", kafka_config=["request_timeout_ms=5"])
    kafka = settings_for(KafkaSettings, settings, prefix="kafka_", extra={"x": 1})
    assert kafka.bootstrap_servers == "127.0.0.1:9092" and kafka.namespace == "n."
    assert kafka.extra == {"x": 1}
    with pytest.raises(AttributeError):  # a field without a setting must be given
        settings_for(KafkaSettings, settings, prefix="kafka_")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"engine": "kafka"}, "--engine kafka needs --kafka-bootstrap-servers"),
        ({**KAFKA, "kafka_listener": "127.0.0.1:0"}, "--kafka-listener serves the embedded"),
        ({**KAFKA, "kafka_config": ["no-equals-sign"]}, "expected name=value"),
        ({"kafka_config": ["no-equals-sign"]}, "expected name=value"),
    ],
)
def test_the_rules_between_settings_are_checked_once_when_made(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**settings)


def test_settings_that_fit_together_are_accepted() -> None:
    assert Settings(**KAFKA).engine == "kafka"
    assert Settings(kafka_listener="127.0.0.1:0").kafka_listener == "127.0.0.1:0"
