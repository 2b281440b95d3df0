"""A flow resumed on topics that were created again: the state is kept, the offsets are not."""

from __future__ import annotations

import time

import pytest

from cxstream.clients import ensure_topics
from cxstream.flows.connect import FlowIO
from cxstream.flows.run import partition_watch
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


def test_the_partition_watch_counts_the_brokers_partitions_against_those_listed(live_settings):
    settings = live_settings
    topic = settings.kafka.topics.qos
    ensure_topics(settings, [topic])
    source = BatchKafkaSource(settings.kafka.brokers, [topic], add_config={})
    watch = partition_watch(FlowIO(qos_source=source, kafka_sink=None))  # type: ignore[arg-type]
    assert watch.check() == {}  # not listed yet: the flow has not started
    parts = source.list_parts()
    assert source.listed == {topic: len(parts)} and watch.check() == {topic: 0}
    source.listed[topic] -= 1  # as if the broker had one more partition than at the start
    assert watch.check() == {topic: 1}


def test_a_partition_added_after_the_first_start_is_read_from_its_first_offset(
    live_settings, tmp_path
):
    # The actions topic is read from its end at a fresh start (the history is not re-sent),
    # but a partition added while the flow ran holds only what came since: a restart reads it
    # whole. Tansu cannot add partitions: the first start is written as having seen one.
    settings = live_settings
    topic = settings.kafka.topics.actions
    ensure_topics(settings, [topic])
    for i in range(40):  # both partitions, a batch each (Tansu's end is its last batch's start)
        produce(settings, topic, [(b"k%d" % i, b"v")])
    start = tmp_path / "actions-start"
    source = BatchKafkaSource(
        settings.kafka.brokers, [topic], add_config={}, from_end=True, start_dir=start
    )
    start.mkdir()
    (start / f"{topic}.partitions").write_text("1")  # the first start saw partition 0 only
    assert source.list_parts() == [f"0-{topic}", f"1-{topic}"]
    assert (start / f"{topic}.partitions").read_text() == "1"  # what the first start saw stays
    first, added = (source.build_part("in", f"{i}-{topic}", None) for i in (0, 1))
    try:
        seen: dict[int, list[int]] = {0: [], 1: []}
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for part in (first, added):
                for batch in part.next_batch():
                    seen[batch.partition].extend(batch.offsets)
        assert seen[1] == list(range(len(seen[1]))) and len(seen[1]) > 1  # all of it
        assert 0 not in seen[0] and len(seen[0]) <= 1  # from its end: not the history
        assert (start / f"{topic}-1").read_text() == "0" and (start / f"{topic}-0").exists()
    finally:
        first.close()
        added.close()
    fresh = tmp_path / "fresh"
    BatchKafkaSource(
        settings.kafka.brokers, [topic], add_config={}, from_end=True, start_dir=fresh
    ).list_parts()
    assert (fresh / f"{topic}.partitions").read_text() == "2"  # a first start records them
