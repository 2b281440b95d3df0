"""The broker frozen for 9 seconds in the middle of a run (SIGSTOP: connections stay open and
nothing is answered, as a hung broker or a partition that drops packets does): the flow shows it
in ``cxstream_kafka_input_silent_seconds`` (its own health cannot: the lag stands still), loses
nothing, and reads on once the broker answers."""

from __future__ import annotations

import os
import signal

import pytest

from cxstream.clients import ensure_topics
from cxstream.devtools.flowprocess import FlowProcess
from cxstream.devtools.services import EmbeddedBroker
from cxstream.devtools.simulate import Simulator
from cxstream.events import utcnow
from tests.faults.conftest import (
    SECRET,
    ended,
    freeze_then_thaw,
    stream_in_real_time,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

FREEZE_AT, FREEZE_S, RUN_S, RATE = 4.0, 9.0, 15.0, 300
SILENT = "cxstream_kafka_input_silent_seconds"


def test_a_frozen_broker_is_seen_and_nothing_is_lost(live_settings, tmp_path):
    broker = EmbeddedBroker().start()
    assert broker.proc is not None
    try:
        kafka = live_settings.kafka.model_copy(update={"brokers": [broker.bootstrap]})
        settings = live_settings.model_copy(update={"kafka": kafka})
        ensure_topics(settings)
        sim = Simulator(300, 10, seed=53)
        flow = FlowProcess(settings, tmp_path, SECRET)
        try:
            flow.wait_ready()
            # the flow itself answers while the broker is frozen
            freeze, marks = freeze_then_thaw(broker.proc.pid, FREEZE_AT, FREEZE_S, flow.counters)
            sent = stream_in_real_time(settings, sim, utcnow(), RATE, RUN_S, freeze)
            wait_until(lambda: ended(flow.counters()) >= sent, 60, "every event")
            wait_until(lambda: flow.counters()[SILENT] < 2, 10, "the silence to end")
            end = flow.counters()
            assert flow.proc.poll() is None
        finally:
            flow.stop()
        (before, _), (back, _) = marks["frozen"], marks["back"]
        assert before[SILENT] < 2  # fetches are answered every half second
        assert back[SILENT] >= FREEZE_S - 3  # statistics come every second
        assert ended(back) - ended(before) < 0.1 * RATE * FREEZE_S  # nothing could be read
        assert end["cxstream_events_total{outcome=processed}"] == sent  # none lost
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)  # if a failure left it frozen
        broker.stop()
