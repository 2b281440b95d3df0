"""Read and write real Kafka topics in tests (partitions assigned: no slow group join)."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from cxstream.settings import Settings


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(settings.kafka.client_config())
    for key, value in records:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 20.0, quiet_s: float = 0.25
) -> list[bytes]:
    """Every message in ``topic``: each partition read from its beginning until every partition
    has reported its end and then nothing more came for ``quiet_s``; a read that does not settle
    within ``timeout_s`` fails the test rather than returning part of the topic. (The embedded
    broker's listed end offsets are not used: they lag what it serves, so a read up to them
    returns part of the topic.)"""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": "cx-tests",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "fetch.wait.max.ms": "50",  # at the end, a fetch answers within this: quiet is quiet
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        values: list[bytes] = []
        at_end: set[int] = set()
        start = last = time.monotonic()
        while len(at_end) < len(partitions) or time.monotonic() - last < quiet_s:
            if time.monotonic() - start > timeout_s:
                msg = f"reading {topic} did not settle within {timeout_s:.0f}s"
                raise TimeoutError(msg)
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            last = time.monotonic()
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                continue
            values.append(msg.value())
        return values
    finally:
        consumer.close()
