"""Read and write real Kafka topics in tests (partitions assigned: no slow group join)."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from cxstream.settings import Settings


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer(settings.kafka.client_config())
    for key, value in records:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0


def read_topic(settings: Settings, topic: str, timeout_s: float = 20.0) -> list[bytes]:
    """Every message currently in ``topic``, from the beginning to the end of each partition."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": "cx-tests",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    values, at_end = [], set()
    deadline = time.monotonic() + timeout_s
    while len(at_end) < len(partitions) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == msg.error()._PARTITION_EOF:
                at_end.add(msg.partition())
            continue
        values.append(msg.value())
    consumer.close()
    return values
