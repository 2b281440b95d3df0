"""Records that used to crash the flow (and crash it again on every restart) end as dead letters
or processed records, the flow keeps running, and a restart from the same recovery directory is
clean: a 900 kB random message, ids long enough to overflow derived ids, a 128-character cell
id in an outage, outcome times beyond the calendar, JSON nested 1,000 deep, ids with NUL,
newlines or ``../``."""

from __future__ import annotations

import base64
import random
import time
from datetime import timedelta

import orjson
import pytest
from confluent_kafka import Producer

from cxstream.devtools.flowprocess import FlowProcess
from cxstream.events import ID_MAX, utcnow
from tests.faults.conftest import SECRET, ended, wait_until
from tests.integration.kafka_helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]


def qos(sub: str, cell: str, event_id: str, seconds_ago: float, *, bad: bool) -> dict:
    return {
        "event_id": event_id,
        "event_time": (utcnow() - timedelta(seconds=seconds_ago)).isoformat(),
        "subscriber_id": sub,
        "cell_id": cell,
        "service": "voice",
        "rtt_ms": 900.0 if bad else 35.0,
        "jitter_ms": 80.0 if bad else 2.0,
        "loss_pct": 30.0 if bad else 0.1,
    }


def test_poison_records_are_dead_lettered_and_never_crash_loop_the_flow(live_settings, tmp_path):
    settings = live_settings.model_copy(
        update={
            "flow": live_settings.flow.model_copy(
                update={"recovery_dir": str(tmp_path / "recovery"), "snapshot_interval_s": 1.0}
            )
        }
    )
    topics = settings.kafka.topics
    rng = random.Random(5)
    poison: list[bytes] = [rng.randbytes(900_000)]
    deep = orjson.dumps(qos("s-deep", "cell-1", "deep-1", 30, bad=False))
    poison.append(deep[:-1] + b',"ignored":' + b"[" * 1000 + b"]" * 1000 + b"}")
    for sub in ("nul\x00id", "line\nbreak", "../../etc/passwd", "a b"):
        poison.append(orjson.dumps(qos(sub, "cell-1", f"bad-id-{len(poison)}", 30, bad=False)))
    valid: list[bytes] = []
    # a degrading subscriber whose ids make the alert id `deg-<sub>-<event>` 228 characters
    long_sub, long_event = "s" * 120, "e" * 103
    valid.append(orjson.dumps(qos(long_sub, "cell-9", long_event, 40, bad=True)))
    # an outage of a cell whose id is 128 characters: ten subscribers degrade together
    long_cell = "c" * ID_MAX
    for i in range(10):
        for k in range(12):
            valid.append(
                orjson.dumps(qos(f"sub-{i}", long_cell, f"out-{i}-{k}", 50 - 4 * k, bad=k >= 6))
            )
    outcomes = [
        orjson.dumps({"subscriber_id": "s1", "kind": "churned", "time": t})
        for t in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00")
    ]
    producer = Producer(settings.kafka.client_config())
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    flow = FlowProcess(settings, tmp_path / "first", SECRET)
    try:
        flow.wait_ready()
        for value in poison + valid:
            producer.produce(topics.qos, value=value)
        for value in outcomes:
            producer.produce(topics.outcomes, value=value)
        producer.flush(30)
        total = len(poison) + len(valid)
        wait_until(lambda: ended(flow.counters()) >= total, 60, "every record to end")
        # the long cell's incident (its held alerts are released by a timer, later on a busy
        # machine), then its alerts out and a snapshot
        wait_until(
            lambda: flow.counters().get("cxstream_cell_incidents_total", 0) >= 1, 60, "incident"
        )
        wait_until(lambda: flow.counters().get("cxstream_held_alerts", 0) == 0, 60, "held alerts")
        time.sleep(2.0)
        counters = flow.counters()
        assert flow.proc.poll() is None, "the flow died"
    finally:
        flow.stop()
    assert counters["cxstream_events_total{outcome=processed}"] == len(valid)
    assert counters["cxstream_events_total{outcome=dead_letter}"] == len(poison)

    dead = [orjson.loads(v) for v in read_topic(settings, topics.dead_letters)]
    by_kind: dict[str, list[dict]] = {}
    for d in dead:
        by_kind.setdefault(d["kind"], []).append(d)
    qos_dead = by_kind["qos"]
    assert len(qos_dead) == len(poison)
    huge = next(d for d in qos_dead if "900000 bytes" in d["detail"])
    assert len(base64.b64decode(huge["raw_b64"])) < 100_000  # bounded, with size and hash
    assert "sha256" in huge["detail"]
    assert sum(d["reason"] == "bad_id" for d in qos_dead) == 4
    assert any("recursion" in d["detail"] for d in qos_dead)
    assert [d["reason"] for d in by_kind["outcome"]] == ["out_of_range", "out_of_range"]

    alerts = [orjson.loads(v) for v in read_topic(settings, topics.alerts)]
    mine = [a for a in alerts if (a.get("x-cxstream") or {}).get("subscriber_id") == long_sub]
    assert mine and all(len(a["id"]) <= ID_MAX for a in mine)
    alarms = [a for a in alerts if a.get("@type") == "Alarm"]
    assert any(a["alarmedObject"]["id"] == long_cell for a in alarms)
    assert all(len(a["id"]) <= ID_MAX for a in alarms)

    # a restart from the same recovery directory stays up and goes on processing
    again = FlowProcess(settings, tmp_path / "second", SECRET)
    try:
        again.wait_ready()
        after = orjson.dumps(qos("after", "cell-1", "after-1", 5, bad=False))
        producer.produce(topics.qos, value=after)
        producer.flush(30)
        wait_until(
            lambda: again.counters().get("cxstream_events_total{outcome=processed}", 0) >= 1,
            60,
            "the restarted flow to process a new event",
        )
        time.sleep(2.0)
        assert again.proc.poll() is None, "the restarted flow died"
    finally:
        again.stop()
