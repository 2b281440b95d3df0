from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner

from cxstream.cli import main
from cxstream.errors import ConfigError
from cxstream.settings import load_settings


def test_defaults_are_valid():
    settings = load_settings()
    assert settings.kafka.brokers is None
    assert settings.kafka.consumer_config["fetch.queue.backoff.ms"] == "20"


def test_typo_in_a_nested_key_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("kafka:\n  brokerz: [x:1]\nredis:\n  cache_ttl_s: -3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert "kafka.brokerz" in text
    assert "redis.cache_ttl_s" in text
    assert str(path) in text


def test_env_overrides_yaml_and_yaml_keeps_other_defaults(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  brokers: [yaml:9092]\n  topics: {qos: my.qos}\n")
    monkeypatch.setenv("CXSTREAM_KAFKA__BROKERS", '["env:9092"]')
    settings = load_settings(path)
    assert settings.kafka.brokers == ["env:9092"]
    assert settings.kafka.topics.qos == "my.qos"
    assert settings.kafka.topics.alerts == "cx.alerts"


def test_secrets_never_print(monkeypatch):
    monkeypatch.setenv("CXSTREAM_WEBHOOK__SECRET", "whsec_dG9wLXNlY3JldC10b3Atc2VjcmV0LXRvcA==")
    settings = load_settings()
    assert "dG9wLXNlY3JldA" not in repr(settings)
    assert (
        settings.webhook.secret.get_secret_value() == "whsec_dG9wLXNlY3JldC10b3Atc2VjcmV0LXRvcA=="
    )


def test_not_a_mapping_and_not_yaml_are_clear_errors(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_settings(listing)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken)


def test_a_key_written_twice_is_refused_naming_both_lines(tmp_path):
    # YAML readers usually keep the last silently: a second `kafka:` would drop the first
    twice = tmp_path / "twice.yaml"
    twice.write_text(
        "kafka:\n  brokers: a:9092\nredis:\n  url: redis://r\nkafka:\n  brokers: b:9092\n"
    )
    with pytest.raises(
        ConfigError, match=r"(?s)not valid YAML.*'kafka' a second time \(first at line 1\).*line 5"
    ):
        load_settings(twice)


def test_librdkafka_values_may_be_written_unquoted(tmp_path, monkeypatch):
    path = tmp_path / "k.yaml"
    path.write_text("kafka:\n  producer_config: {linger.ms: 10, enable.idempotence: false}\n")
    assert load_settings(path).kafka.producer_config == {
        "linger.ms": "10",
        "enable.idempotence": "false",
    }
    monkeypatch.setenv(
        "CXSTREAM_KAFKA__EXTRA_CONFIG",
        '{"socket.keepalive.enable": true, "message.max.bytes": 1e6}',
    )
    assert load_settings(path).kafka.extra_config == {
        "socket.keepalive.enable": "true",
        "message.max.bytes": "1000000",
    }


def test_brokers_may_be_written_as_kafka_writes_them(tmp_path, monkeypatch):
    path = tmp_path / "b.yaml"
    path.write_text("kafka:\n  brokers: kafka-1:9092, kafka-2:9092\n")
    assert load_settings(path).kafka.brokers == ["kafka-1:9092", "kafka-2:9092"]
    monkeypatch.setenv("CXSTREAM_KAFKA__BROKERS", "k1:9092,k2:9092")
    assert load_settings().kafka.brokers == ["k1:9092", "k2:9092"]
    monkeypatch.setenv("CXSTREAM_KAFKA__BROKERS", '["k3:9092"]')
    assert load_settings().kafka.brokers == ["k3:9092"]


def test_check_config_exits_2_with_the_bad_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("detector:\n  threshold: 7\n")
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "detector.threshold" in result.output


def test_check_config_accepts_the_shipped_example():
    result = CliRunner().invoke(main, ["check-config", "config/cxstream.yaml"])
    assert result.exit_code == 0, result.output
    assert '"qos": "cx.qos"' in result.output


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("flow:\n  gil_switch_interval_s: 0\n", ["flow.gil_switch_interval_s"]),
        (
            "cells:\n  kpis:\n    timezone: Europe/Atlantis\n",
            ["cells.kpis.timezone", "Europe/Atlantis"],
        ),
    ],
    ids=["gil_switch_interval_of_zero", "unknown_cell_time_zone"],
)
def test_a_bad_nested_value_is_an_error_naming_the_key(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    for words in named:
        assert words in str(info.value)


def test_a_bad_environment_variable_is_reported_under_its_name(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("flow:\n  workers: 2\n")
    monkeypatch.setenv("CXSTREAM_KAFKA__BROKERS", '{"host": "kafka:9092"}')  # not a list
    monkeypatch.setenv("CXSTREAM_FLOW__SHARDS", "0")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    text = str(err.value)
    assert "CXSTREAM_KAFKA__BROKERS (environment variable): Input should be a valid list" in text
    assert "CXSTREAM_FLOW__SHARDS (environment variable)" in text
    assert "kafka.brokers" not in text


def test_a_bad_file_value_is_still_reported_under_its_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("flow:\n  workers: 0\n")
    with pytest.raises(ConfigError, match=r"flow\.workers: Input should be greater"):
        load_settings(config)


def _keys(tree, prefix=""):
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_the_documented_config_file_is_exactly_the_defaults_and_names_every_key():
    import yaml

    from cxstream.settings import Settings

    path = "config/cxstream.yaml"
    documented = load_settings(path).model_dump(mode="json")
    assert documented == Settings().model_dump(mode="json")
    with open(path, encoding="utf-8") as fh:
        written = yaml.safe_load(fh)
    missing = _keys(Settings().model_dump(mode="json")) - _keys(written)
    assert not missing, f"settings not in {path}: {sorted(missing)}"


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("", "the key is 0 bytes"),
        ("a", "must be the base64 of the key"),
        ("whsec_", "the key is 0 bytes"),
        ("whsec_!!!", "must be the base64 of the key"),
        ("whsec_c2hvcnQ=", "the key is 5 bytes; at least 24"),
    ],
)
def test_a_weak_webhook_secret_refuses_to_start(monkeypatch, secret, why):
    monkeypatch.setenv("CXSTREAM_WEBHOOK__SECRET", secret)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "CXSTREAM_WEBHOOK__SECRET" in str(err.value) and why in str(err.value)
    assert "c2hvcnQ" not in str(err.value)  # the value itself is never shown


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(b"k" * 25).decode().rstrip("="),  # padding left out
        base64.b64encode(b"k" * 25).decode(),  # no whsec_ prefix
    ],
)
def test_a_webhook_secret_is_read_as_the_standard_webhooks_libraries_read_it(monkeypatch, secret):
    monkeypatch.setenv("CXSTREAM_WEBHOOK__SECRET", secret)
    assert load_settings().webhook.secret.get_secret_value() == secret


def test_a_weak_previous_webhook_secret_refuses_to_start_too(monkeypatch):
    monkeypatch.setenv("CXSTREAM_WEBHOOK__PREVIOUS_SECRET", "whsec_c2hvcnQ=")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "CXSTREAM_WEBHOOK__PREVIOUS_SECRET" in str(err.value) and "5 bytes" in str(err.value)


def test_a_plain_http_webhook_url_needs_to_be_allowed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("webhook:\n  url: http://crm.example.com/hooks\n")
    with pytest.raises(ConfigError, match="plain http://"):
        load_settings(path)
    path.write_text("webhook:\n  url: http://127.0.0.1:9000/\n  allow_http: true\n")
    assert load_settings(path).webhook.url == "http://127.0.0.1:9000/"
    path.write_text("webhook:\n  url: https://crm.example.com/hooks\n")
    assert load_settings(path).webhook.url.startswith("https://")
