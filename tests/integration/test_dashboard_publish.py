"""The dashboard's publisher of operators' commands, against a broker that does not answer."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_the_publisher_drops_a_command_kafka_did_not_take():
    from confluent_kafka import Producer

    from cxstream.dashboard.server import kafka_publisher
    from cxstream.errors import ServiceError

    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    publish = kafka_publisher(producer, timeout_s=0.5)
    with pytest.raises(ServiceError, match="did not confirm"):
        publish("cx.alarm-updates", b"c1", b"{}")
    assert len(producer) == 0  # not left queued, to reach the flow after the operator retried
