"""A flow resumed on a topic that was created again (shorter than the snapshot's offset)."""

from __future__ import annotations

import logging

import pytest

from cxstream.flows.source import BatchKafkaSource
from cxstream.services import ensure_topics
from tests.integration.kafka_helpers import produce

pytestmark = pytest.mark.integration


def test_an_offset_beyond_the_end_of_the_log_resumes_at_its_start(live_settings, caplog):
    settings = live_settings
    topic = settings.kafka.topics.qos
    ensure_topics(settings, [topic])
    produce(settings, topic, [(b"k%d" % i, b"v") for i in range(40)])  # both partitions
    source = BatchKafkaSource(settings.kafka.brokers, [topic], add_config={})
    parts = source.list_parts()
    with caplog.at_level(logging.WARNING, logger="cxstream.flows.source"):
        resumed = [source.build_part("in", part, 1_000) for part in parts]
        within = [source.build_part("in", part, 1) for part in parts]
    try:
        assert {p._offset for p in resumed} == {0}  # the log's start: nothing is skipped
        assert {p._offset for p in within} == {1}  # an offset inside the log is kept
        assert sum("beyond the end of the log" in r.getMessage() for r in caplog.records) == len(
            parts
        )
    finally:
        for p in resumed + within:
            p.close()
