from __future__ import annotations

from typing import Any

from cxstream.context import ContextStore
from cxstream.flows.cx import FlowIO, kafka_io
from cxstream.pipeline import Pipeline
from cxstream.settings import Settings, load_settings
from tests.fakes import FakeRedis


def _kafka_io(**kafka: Any) -> tuple[Settings, FlowIO]:
    """The production inputs and outputs for a broker that is never reached (nothing connects
    until the sources run), with ``kafka`` settings changed."""
    settings = load_settings()
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"brokers": ["127.0.0.1:1"], **kafka})}
    )
    pipeline = Pipeline(settings, context=ContextStore(FakeRedis()), claims=None)  # type: ignore[arg-type]
    return settings, kafka_io(settings, pipeline)


def test_low_volume_inputs_ask_the_broker_less_often_than_the_hot_input():
    _, io = _kafka_io()

    hot = io.qos_source._config()  # type: ignore[attr-defined]
    side = [io.customer_source._config(), io.outcome_source._config()]  # type: ignore[union-attr]
    assert hot["fetch.wait.max.ms"] == "10"
    assert all(c["fetch.wait.max.ms"] == "250" for c in side)
    # the rest of the consumer settings still apply to them
    assert all(c["queued.min.messages"] == "1000000" for c in side)
    assert all(c["bootstrap.servers"] == "127.0.0.1:1" for c in side)


def test_partitions_are_listed_without_consumer_only_properties(monkeypatch):
    # librdkafka's admin client warns about every consumer property it is given, at every start
    settings, io = _kafka_io(extra_config={"security.protocol": "ssl"})
    seen: list[dict[str, str]] = []

    class Topic:
        error = None
        partitions = {0: None, 1: None}

    class Admin:
        def __init__(self, config: dict[str, str]) -> None:
            seen.append(config)

        def list_topics(self, topic: str) -> object:
            return type("Meta", (), {"topics": {topic: Topic()}})()

    monkeypatch.setattr("cxstream.flows.source.AdminClient", Admin)
    for source in (io.qos_source, io.customer_source, io.outcome_source):
        assert len(source.list_parts()) == 2  # type: ignore[union-attr]
    assert len(seen) == 3
    for config in seen:
        assert config["bootstrap.servers"] == "127.0.0.1:1"
        assert config["security.protocol"] == "ssl"  # what the client needs to connect is kept
        assert not set(config) & set(settings.kafka.consumer_config)
