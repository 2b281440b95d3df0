"""Read and write real Kafka topics in tests (partitions assigned: no slow group join)."""

from __future__ import annotations

from confluent_kafka import Producer

from cxstream import clients
from cxstream.settings import Settings


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(settings.kafka.client_config())
    for key, value in records:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 20.0, quiet_s: float = 0.25
) -> list[bytes | None]:
    """Every message in ``topic`` (:func:`cxstream.clients.read_topic`), read on for ``quiet_s``
    after every partition's end, so that a test never checks part of a topic; a read that does
    not settle within ``timeout_s`` fails the test. (The embedded broker's listed end offsets are
    not used: they lag what it serves.)"""
    return clients.read_topic(settings, topic, timeout_s, quiet_s=quiet_s)
