"""librdkafka's log lines reach Python logging, a few a minute (cxstream/kafkalog.py)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka.admin import AdminClient

from cxstream.devtools.services import free_port
from cxstream.kafkalog import KAFKA_LOGGER, RateLimit

pytestmark = pytest.mark.integration


def record(fac: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("k", level, "", 0, "%s [%s] %s", (fac, "rdkafka#1", "x"), None)


def test_the_first_line_after_a_suppression_says_how_many_were_dropped():
    now = [0.0]
    limit = RateLimit(per_window=2, window_s=60, clock=lambda: now[0])
    assert [limit.filter(record("FAIL")) for _ in range(5)] == [True, True, False, False, False]
    now[0] = 61.0
    line = record("FAIL")
    assert limit.filter(line)
    assert line.getMessage().endswith("(3 similar lines suppressed)")


def test_an_unreachable_broker_logs_a_handful_of_lines(caplog):
    # librdkafka tries to connect several times a second; what reaches the log is bounded
    port = free_port()  # nothing listens there
    admin = AdminClient(
        {
            "bootstrap.servers": f"127.0.0.1:{port}",
            "logger": KAFKA_LOGGER,
            "reconnect.backoff.ms": 1,
        }
    )
    with caplog.at_level(logging.DEBUG, logger="cxstream.kafka"):
        with pytest.raises(Exception, match=r"transport|timed out|Timed out"):
            admin.list_topics(timeout=3)
        admin.poll(0)
    lines = [r for r in caplog.records if r.name == "cxstream.kafka"]
    assert 1 <= len(lines) <= 10, [r.getMessage() for r in lines]
    assert any("Connection refused" in r.getMessage() for r in lines)
