"""10,000 fuzzed malformed records in the middle of valid traffic: all dead-lettered with a reason,
the dataflow keeps running, and valid events keep their pace (measured in the same run)."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import orjson
import pytest
from confluent_kafka import Producer

from cxstream.devtools.flowprocess import FlowProcess
from cxstream.devtools.simulate import Simulator
from cxstream.events import utcnow
from tests.faults.conftest import SECRET, ended, wait_until
from tests.integration.kafka_helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

REASONS = {"not_json", "missing_field", "bad_type", "out_of_range", "stale", "future"}


def fuzz(rng: random.Random, good: dict) -> bytes:
    """One malformed record: random bytes, truncation, wrong types, huge or non-finite numbers,
    unknown enums, timestamps far away, or missing fields."""
    kind = rng.randrange(8)
    record = dict(good)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 200))
    if kind == 1:
        return orjson.dumps(record)[: rng.randrange(1, 40)]
    if kind == 2:
        record[rng.choice(["rtt_ms", "loss_pct", "jitter_ms"])] = rng.choice(["fast", [], {}, True])
    elif kind == 3:
        big = rng.choice(["1e308", "-1e308", str(10**40)])
        return orjson.dumps(record).replace(b'"rtt_ms":', b'"rtt_ms":' + big.encode() + b',"y":')
    elif kind == 4:
        return orjson.dumps(record).replace(b'"rtt_ms":', b'"rtt_ms":NaN,"x":')
    elif kind == 5:
        record["service"] = rng.choice(["hologram", "", "VOICE", 7])
    elif kind == 6:
        record["event_time"] = rng.choice(
            ["1970-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "yesterday"]
        )
    else:
        del record[rng.choice(["event_id", "subscriber_id", "cell_id", "service"])]  # required
    return orjson.dumps(record)


def processed(flow) -> float:
    return flow.counters().get("cxstream_events_total{outcome=processed}", 0.0)


def test_a_burst_of_malformed_records_is_dead_lettered_and_valid_traffic_keeps_its_pace(
    live_settings, tmp_path
):
    """Valid events arrive at a steady 3,000/s (a system below saturation, as in production);
    in the middle, 10,000 fuzzed records arrive at once. The valid-event processing rate during
    the burst must stay within 20 % of the rate before it."""
    settings = live_settings
    sim = Simulator(500, 20, seed=41)
    rng = random.Random(41)
    times = sim.timeline(utcnow() - timedelta(minutes=5), 400, diurnal=False)
    producer = Producer(settings.kafka.client_config())
    topic = settings.kafka.topics.qos
    flow = FlowProcess(settings, tmp_path, SECRET)
    rate = 3_000
    try:
        flow.wait_ready()
        samples: list[tuple[float, float]] = []
        burst_at = 4.0
        burst_sent = False
        t0 = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - t0) < 10.0:
            due = int(elapsed * rate)
            while sent < due:
                key, value = sim.encoded(next(times))
                producer.produce(topic, value=value, key=key)
                sent += 1
            if not burst_sent and elapsed >= burst_at:
                for _ in range(10_000):
                    producer.produce(topic, value=fuzz(rng, sim.event(next(times))))
                burst_sent = True
            producer.poll(0)
            samples.append((elapsed, processed(flow)))
            time.sleep(0.05)
        producer.flush(30)
        wait_until(lambda: ended(flow.counters()) >= sent + 10_000, 60, "the backlog")
        counters = flow.counters()
        assert flow.proc.poll() is None  # still running
    finally:
        flow.stop()

    def rate_between(a: float, b: float) -> float:
        inside = [(t, n) for t, n in samples if a <= t <= b]
        (t1, n1), (t2, n2) = inside[0], inside[-1]
        return (n2 - n1) / (t2 - t1)

    before = rate_between(1.0, burst_at)
    during = rate_between(burst_at, burst_at + 4.0)
    print(
        f"valid events/s at a steady {rate}/s: {before:,.0f} before the burst, "
        f"{during:,.0f} during it ({during / before:.2f}x)"
    )
    assert counters["cxstream_events_total{outcome=processed}"] == sent
    assert counters["cxstream_events_total{outcome=dead_letter}"] == 10_000
    dead = [orjson.loads(v) for v in read_topic(settings, settings.kafka.topics.dead_letters)]
    assert len(dead) == 10_000
    assert {d["reason"] for d in dead} <= REASONS
    assert len({d["reason"] for d in dead}) >= 4
    assert all(d["detail"] and d["offset"] is not None for d in dead)
    assert during >= 0.8 * before
