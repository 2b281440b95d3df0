"""A broker that is not there at start: retries with clear logs, then a clear error; a broker
that comes up during the retries is used."""

from __future__ import annotations

import logging
import threading

import pytest

from cxstream.devtools.services import EmbeddedBroker, free_port
from cxstream.errors import ServiceError
from cxstream.flows.run import wait_for_kafka

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def settings_for(live_settings, port):
    kafka = live_settings.kafka.model_copy(update={"brokers": [f"127.0.0.1:{port}"]})
    return live_settings.model_copy(update={"kafka": kafka})


def test_retries_with_logs_then_fails_with_a_clear_error(live_settings, caplog):
    settings = settings_for(live_settings, free_port())  # nobody listens there
    caplog.set_level(logging.WARNING, logger="cxstream.flows.run")
    with pytest.raises(ServiceError, match="Kafka still unreachable after 3 attempts"):
        wait_for_kafka(settings, attempts=3, first_delay_s=0.1, timeout_s=1.0)
    retries = [r.getMessage() for r in caplog.records if "not reachable" in r.getMessage()]
    assert len(retries) == 2
    assert "attempt 1/3" in retries[0] and "attempt 2/3" in retries[1]


def test_a_broker_that_comes_up_during_the_retries_is_used(live_settings, caplog):
    port = free_port()
    settings = settings_for(live_settings, port)
    broker = EmbeddedBroker(port=port)
    later = threading.Timer(2.0, broker.start)
    later.start()
    caplog.set_level(logging.WARNING, logger="cxstream.flows.run")
    try:
        wait_for_kafka(settings, attempts=6, first_delay_s=0.5, timeout_s=1.0)
        assert any("not reachable" in r.getMessage() for r in caplog.records)
        assert broker.proc is not None and broker.proc.poll() is None
    finally:
        later.join()
        broker.stop()
