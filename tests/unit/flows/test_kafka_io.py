from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from cxstream.context import ContextStore
from cxstream.flows.connect import FlowIO, kafka_io
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

        def list_topics(self, topic: str, timeout: float = -1) -> object:
            return type("Meta", (), {"topics": {topic: Topic()}})()

    monkeypatch.setattr("cxstream.flows.source.AdminClient", Admin)
    for source in (io.qos_source, io.customer_source, io.outcome_source):
        assert len(source.list_parts()) == 2  # type: ignore[union-attr]
    assert len(seen) == 3
    for config in seen:
        assert config["bootstrap.servers"] == "127.0.0.1:1"
        assert config["security.protocol"] == "ssl"  # what the client needs to connect is kept
        assert not set(config) & set(settings.kafka.consumer_config)


class _Producer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def flush(self, *_: object) -> int:
        self.calls.append("flush")
        return 0

    def poll(self, *_: object) -> int:
        self.calls.append("poll")
        return 0

    def __len__(self) -> int:  # records not yet acknowledged
        return self.queued

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **_: object) -> None:
        self.calls.append(f"produce {topic}")

    queued = 0


def test_records_not_yet_acknowledged_are_a_gauge_until_the_output_closes():
    from cxstream.flows.sinks import _KafkaOutPartition

    def queued() -> float:
        return REGISTRY.get_sample_value("cxstream_kafka_out_queued") or 0.0

    before = queued()  # producers of other tests' partitions may still be registered
    producer = _Producer()
    producer.queued = 3
    part = _KafkaOutPartition(producer, flush_on_snapshot=False)  # type: ignore[arg-type]
    assert queued() == before + 3  # read from the producer at scrape time
    producer.queued = 1
    assert queued() == before + 1
    part.close()
    assert queued() == before


def test_outputs_are_waited_for_at_each_epoch_only_with_recovery():
    from cxstream.flows.sinks import _KafkaOutPartition

    with_recovery, without = _Producer(), _Producer()
    _KafkaOutPartition(with_recovery, flush_on_snapshot=True).snapshot()  # type: ignore[arg-type]
    _KafkaOutPartition(without, flush_on_snapshot=False).snapshot()  # type: ignore[arg-type]
    assert with_recovery.calls == ["flush"]  # acknowledged before the snapshot is written
    assert without.calls == ["poll"]  # delivery reports served, the worker does not wait


def test_the_output_sink_waits_at_epochs_when_the_flow_keeps_snapshots(monkeypatch, tmp_path):
    monkeypatch.setattr("cxstream.flows.sinks.Producer", lambda config: _Producer())
    settings, io = _kafka_io()
    assert settings.flow.recovery_dir is None
    part = io.kafka_sink.build_part("kafka_out", "kafka-out-0", None)  # type: ignore[union-attr]
    part.snapshot()
    assert part._producer.calls == ["poll"]  # type: ignore[attr-defined]

    settings = settings.model_copy(
        update={"flow": settings.flow.model_copy(update={"recovery_dir": str(tmp_path)})}
    )
    pipeline = Pipeline(settings, context=ContextStore(FakeRedis()), claims=None)  # type: ignore[arg-type]
    part = kafka_io(settings, pipeline).kafka_sink.build_part("kafka_out", "kafka-out-0", None)  # type: ignore[union-attr]
    part.snapshot()
    assert part._producer.calls == ["flush"]  # type: ignore[attr-defined]


def test_output_records_are_counted_as_they_are_handed_to_the_producer():
    from bytewax.connectors.kafka import KafkaSinkMessage

    from cxstream.flows.sinks import _KafkaOutPartition

    def handed() -> float:
        return REGISTRY.get_sample_value("cxstream_kafka_out_records_total") or 0.0

    before = handed()
    producer = _Producer()
    part = _KafkaOutPartition(producer, flush_on_snapshot=False)  # type: ignore[arg-type]
    part.write_batch([KafkaSinkMessage(b"k", b"v", topic=t) for t in ("a", "b", "a")])
    assert producer.calls == ["produce a", "produce b", "produce a", "poll"]
    assert handed() == before + 3
    part.close()
