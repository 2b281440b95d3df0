"""Redis frozen for 10 seconds in the middle of a run (SIGSTOP: it accepts connections and
answers nothing, as a hung server or a partition that drops packets does): the flow keeps up
with its input on cached context, instead of waiting every call's timeout, and uses Redis again
once it answers."""

from __future__ import annotations

import os
import signal

import pytest
import redis
from pydantic import SecretStr

from cxstream.clients import ensure_topics
from cxstream.context import ContextStore
from cxstream.devtools.flowprocess import FlowProcess
from cxstream.devtools.services import EmbeddedRedis
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

FREEZE_AT, FREEZE_S, RUN_S, RATE = 5.0, 10.0, 19.0, 400


def test_a_frozen_redis_does_not_stall_the_flow(live_settings, tmp_path):
    server = EmbeddedRedis().start()
    try:
        settings = live_settings.model_copy(
            update={
                "redis": live_settings.redis.model_copy(
                    update={"url": SecretStr(server.url), "cache_ttl_s": 2.0}
                )
            }
        )
        ensure_topics(settings)
        sim = Simulator(300, 10, seed=52)
        client = redis.Redis.from_url(server.url)
        ContextStore(client, prefix=settings.redis.key_prefix).put_many(list(sim.profiles()))
        flow = FlowProcess(settings, tmp_path, SECRET)
        try:
            flow.wait_ready()
            start = utcnow()
            freeze, marks = freeze_then_thaw(server.proc.pid, FREEZE_AT, FREEZE_S, flow.counters)
            sent = stream_in_real_time(settings, sim, start, RATE, RUN_S, freeze)
            wait_until(lambda: ended(flow.counters()) >= sent, 60, "every event")
            end = flow.counters()
            assert flow.proc.poll() is None
        finally:
            flow.stop()
        (before, sent_before), (back, sent_back) = marks["frozen"], marks["back"]
        # it kept up while Redis hung: about all the events sent while it was frozen were done
        # by the time it answered; when every call waited its timeout and redis-py's ten
        # retries, 31-40 %
        assert ended(back) - ended(before) >= 0.75 * (sent_back - sent_before), (
            ended(back) - ended(before),
            sent_back - sent_before,
        )
        assert end["cxstream_events_total{outcome=processed}"] == sent  # none lost

        def grew(name, a, b):
            return b.get(name, 0) - a.get(name, 0)

        stale, miss = (
            f"cxstream_enrichment_lookups_total{{result={r}}}" for r in ("stale", "miss")
        )
        assert grew(stale, before, back) > 0  # it went on with the cached context, marked stale
        assert grew(miss, back, end) > 0  # and read Redis again once it answered
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)  # if a failure left it frozen
        server.stop()
