"""Event time: watermarks per input partition, late and future events, clocks that never jump."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from cxstream import metrics
from cxstream.batches import RawBatch
from cxstream.context import ContextStore
from cxstream.detectors.cells import CellMonitor
from cxstream.settings import Settings
from cxstream.steps import Detect, Ingest
from cxstream.steps.common import RedisTrouble
from tests.fakes import FakeRedis
from tests.unit.steps.test_steps import KEYS, NOON, SETTINGS


def qos(sub: str, at: datetime, cell: str = "c1", **values: float) -> bytes:
    record = {
        "event_id": f"{sub}-{at.timestamp()}",
        "event_time": at.isoformat(),
        "subscriber_id": sub,
        "cell_id": cell,
        "service": "voice",
        "rtt_ms": 40.0,
        **values,
    }
    return orjson.dumps(record)


def ingest(settings: Settings = SETTINGS, now: datetime = NOON) -> Ingest:
    return Ingest(settings, ContextStore(FakeRedis()), clock=lambda: now, shard_keys=KEYS)


def poll(step: Ingest, values: list[bytes], partition: int = 0):
    return step.parse([RawBatch("cx.qos", partition, values, list(range(len(values))))])


def late_count(handling: str) -> float:
    return metrics.LATE_EVENTS.labels(handling)._value.get()


def test_events_ten_minutes_ahead_of_the_wall_clock_are_dead_lettered_as_future():
    bad, batch = poll(ingest(), [qos("s1", NOON + timedelta(minutes=10)), qos("s2", NOON)])
    assert [b.reason for b in bad] == ["future"]
    assert batch is not None and batch.subscribers == ["s2"]


def test_a_historical_replay_is_judged_by_its_partition_not_the_wall_clock():
    step = ingest()
    old = datetime(2019, 12, 2, 9, 39, tzinfo=UTC)  # years before the wall clock
    bad, batch = poll(step, [qos("trace", old + timedelta(seconds=i)) for i in range(5)])
    assert bad == [] and batch is not None and len(batch) == 5
    assert step.watermarks[("cx.qos", 0)] == (old + timedelta(seconds=4)).timestamp()
    # stale is relative to the partition: 8 days behind it, with the default 7-day limit
    bad, _ = poll(step, [qos("trace", old - timedelta(days=8)), qos("trace", old)])
    assert [b.reason for b in bad] == ["stale"]


def test_events_hours_behind_their_partition_are_counted_late_and_flagged():
    step = ingest()
    poll(step, [qos("s1", NOON)])
    before = late_count("process")
    bad, batch = poll(step, [qos("s1", NOON - timedelta(hours=3)), qos("s2", NOON)])
    assert bad == []
    assert batch is not None and batch.late.tolist() == [True, False]
    assert late_count("process") == before + 1
    # the other partition has its own watermark: nothing is late there
    _, other = poll(step, [qos("s3", NOON - timedelta(hours=3))], partition=1)
    assert other is not None and not other.late.any()


def test_late_events_can_be_dead_lettered_instead():
    settings = Settings(flow={"late_events": "dead_letter"})
    step = ingest(settings)
    poll(step, [qos("s1", NOON)])
    bad, batch = poll(step, [qos("s1", NOON - timedelta(hours=3)), qos("s2", NOON)])
    assert [b.reason for b in bad] == ["late"]
    assert batch is not None and batch.subscribers == ["s2"]


def test_an_alert_raised_by_a_late_event_says_so():
    step = ingest()
    detect = Detect(
        SETTINGS, step.context, clock=lambda: NOON, shard_keys=KEYS, trouble=RedisTrouble()
    )
    table = detect.new_table()
    good = [qos("s1", NOON - timedelta(hours=5, seconds=-i)) for i in range(20)]
    poll(step, [qos("s9", NOON)])  # the partition is at noon: everything below is late
    _, batch = poll(
        step, good + [qos("s1", NOON - timedelta(hours=4), loss_pct=40.0, rtt_ms=900.0)] * 5
    )
    alerts = [
        c.alert for _, b in detect.detect_shard(table, [batch]) for c in b.candidates.values()
    ]
    assert alerts and all(a.late for a in alerts)


def test_a_cell_clock_does_not_jump_and_a_held_alert_waits_for_real_time():
    cell = CellMonitor("c1")
    t0 = NOON.timestamp()
    for i in range(10):
        cell.observe(t0 + i, f"s{i}", degraded=False, experience=90.0)
    _, released = cell.observe(t0 + 10, "s1", degraded=True, experience=20.0, alert="alert")
    assert released == [] and cell.holding
    # a probe 10 minutes ahead: taken at the cell's time, the clock stays, nothing is released
    _, released = cell.observe(t0 + 610, "s2", degraded=False, experience=90.0)
    assert released == [] and cell.clock == t0 + 10
    for i in range(11, 18):
        _, released = cell.observe(t0 + i, f"s{i % 10}", degraded=False, experience=90.0)
        assert released == []
    assert cell.holding  # 7 s after the alert, short of the 10 s hold
    _, released = cell.observe(t0 + 21, "s3", degraded=False, experience=90.0)
    assert [r.item for r in released] == ["alert"]


def test_a_late_event_never_replaces_a_newer_one_of_its_subscriber():
    cell = CellMonitor("c1")
    t0 = NOON.timestamp()
    cell.observe(t0, "s1", degraded=True, experience=20.0)
    cell.observe(t0 + 5, "s1", degraded=False, experience=90.0)
    cell.observe(t0 - 3600, "s1", degraded=True, experience=10.0)  # an hour late
    assert cell.clock == t0 + 5
    assert cell._subs["s1"][:3] == (t0 + 5, False, 90.0)
