"""A flow resumed on topics that were created again: the state is kept, the offsets are not."""

from __future__ import annotations

import time

import pytest

from cxstream.clients import ensure_topics
from cxstream.flows.source import BatchKafkaSource
from tests.integration.kafka_helpers import produce

pytestmark = pytest.mark.integration


class Counter:
    def new_state(self):
        return {"seen": 0}

    def process(self, items, state):
        state["seen"] += sum(len(batch.offsets) for batch in items)
        return items


def test_inputs_from_start_keeps_the_state_and_reads_the_new_topic_whole(live_settings):
    settings = live_settings
    topic = settings.kafka.topics.qos
    ensure_topics(settings, [topic])
    produce(settings, topic, [(b"k%d" % i, b"v") for i in range(40)])  # both partitions
    kept = {"seen": 1_000}
    renewed = BatchKafkaSource(
        settings.kafka.brokers, [topic], add_config={}, processor=Counter(), from_start=True
    )
    plain = BatchKafkaSource(settings.kafka.brokers, [topic], add_config={}, processor=Counter())
    parts = renewed.list_parts()
    fresh = [renewed.build_part("in", part, (1_000, dict(kept))) for part in parts]
    resumed = [plain.build_part("in", part, (1, dict(kept))) for part in parts]
    try:
        assert read_all(fresh, 40) == (0, 40)  # every message of the new topic
        assert read_all(resumed, 40 - len(parts)) == (1, 40 - len(parts))  # the offset is kept
        assert sum(p.snapshot()[1]["seen"] for p in fresh) == len(parts) * 1_000 + 40
    finally:
        for p in fresh + resumed:
            p.close()


def read_all(parts, expected):
    """The lowest offset read and the number of messages, polling until ``expected`` came."""
    offsets: list[int] = []
    deadline = time.monotonic() + 20
    while len(offsets) < expected and time.monotonic() < deadline:
        for part in parts:
            for batch in part.next_batch():
                offsets.extend(batch.offsets)
    return min(offsets, default=None), len(offsets)
