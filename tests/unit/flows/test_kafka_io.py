from __future__ import annotations

from cxstream.context import ContextStore
from cxstream.flows.cx import kafka_io
from cxstream.pipeline import Pipeline
from cxstream.settings import load_settings
from tests.fakes import FakeRedis


def test_low_volume_inputs_ask_the_broker_less_often_than_the_hot_input():
    settings = load_settings()
    settings = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"brokers": ["127.0.0.1:1"]})}
    )
    pipeline = Pipeline(settings, context=ContextStore(FakeRedis()), claims=None)  # type: ignore[arg-type]
    io = kafka_io(settings, pipeline)  # builds the sources; nothing connects until they run

    hot = io.qos_source._config()  # type: ignore[attr-defined]
    side = [io.customer_source._config(), io.outcome_source._config()]  # type: ignore[union-attr]
    assert hot["fetch.wait.max.ms"] == "10"
    assert all(c["fetch.wait.max.ms"] == "250" for c in side)
    # the rest of the consumer settings still apply to them
    assert all(c["queued.min.messages"] == "1000000" for c in side)
    assert all(c["bootstrap.servers"] == "127.0.0.1:1" for c in side)
