"""Telling a flow that falls behind from one that catches up, and one that does not read every
partition of its inputs (cxstream/health.py)."""

from __future__ import annotations

import contextlib
import logging
import time

from prometheus_client import REGISTRY

from cxstream.flows.connect import FlowIO
from cxstream.flows.run import partition_watch
from cxstream.flows.source import BatchKafkaSource
from cxstream.health import FlowHealth, HealthMonitor, LagWatch, PartitionWatch


def feed(watch, samples):
    return [watch.update(t, lag=lag, done=done).value for t, lag, done in samples]


def test_a_growing_backlog_while_input_arrives_is_lagging_after_the_window():
    watch = LagWatch(after_s=30, min_lag=100)
    # 1,000 events/s arrive, 800 are done: the lag grows 200 a second
    states = feed(watch, [(t, 200 * t, 800 * t) for t in range(0, 61, 5)])
    assert states[:6] == ["ok"] * 6  # less than a whole window seen
    assert states[-1] == "lagging"
    assert watch.max_lag == 12_000


def test_a_shrinking_backlog_is_not_a_problem():
    watch = LagWatch(after_s=30, min_lag=100)
    # replaying a backlog of 100,000: the lag shrinks though it is large
    states = feed(watch, [(t, 100_000 - 1_000 * t, 2_000 * t) for t in range(0, 91, 5)])
    assert set(states) == {"ok"}


def test_a_restarted_watch_judges_a_backlog_handed_over_by_its_catching_up():
    def handover(watch, start):
        """1,000 events/s arrive throughout; a new flow is handed 12,000 at once (the demo's
        broker replaced), starts for 20 s doing nothing, then does 3,000 a second"""
        samples, lag, done = [], 12_000.0, 60_000.0
        for t in range(0, 91, 5):
            samples.append((start + t, lag, done))
            rate = 0 if t < 20 else min(3_000, 1_000 + lag / 5)
            lag, done = lag + 5 * (1_000 - rate), done + 5 * rate
        return samples

    keeping_up = [(t, 50, 1_000 * t) for t in range(0, 61, 5)]
    watch = LagWatch(after_s=60, min_lag=1_000)
    feed(watch, keeping_up)
    assert "lagging" in feed(watch, handover(watch, 65))  # judged against the old flow's window
    watch = LagWatch(after_s=60, min_lag=1_000)
    feed(watch, keeping_up)
    watch.restart()
    assert set(feed(watch, handover(watch, 65))) == {"ok"}  # caught up within its first window
    assert watch.max_lag > 12_000
    # one that cannot keep up is still lagging after a window of its own
    watch.restart()
    falling_behind = [(200 + t, 12_000 + 200 * t, 240_000 + 800 * t) for t in range(0, 91, 5)]
    assert feed(watch, falling_behind)[-1] == "lagging"


# The lag the demo saw every ~6 s of a 300 s run at 650-1,000 events/s while the flow kept up:
# events produced in bursts wait for the next poll, then are done at once.
KEEPING_UP = [46, 75, 91, 44, 62, 836, 148, 580, 622, 213, 98, 50, 819, 886, 493, 552, 74, 20]
KEEPING_UP += [178, 675, 723, 322, 426, 168, 881, 873, 513, 675, 160, 455, 129, 767, 823, 473]
KEEPING_UP += [461, 96, 165, 67, 715, 688, 349, 393, 84, 60, 1028, 528, 686, 178, 331, 38, 131]


def test_a_lag_that_jitters_across_the_threshold_is_not_lagging():
    watch = LagWatch(after_s=60, min_lag=1_000)
    samples = [(6 * i, lag, 700 * 6 * i) for i, lag in enumerate(KEEPING_UP)]
    assert set(feed(watch, samples)) == {"ok"}
    # one sample above the threshold and above the one a window earlier is not growth either
    assert feed(watch, [(6 * len(KEEPING_UP), 1_500, 700 * 6 * len(KEEPING_UP))]) == ["ok"]


def test_a_slow_growth_under_jitter_is_lagging_once_the_lag_stays_above_the_threshold():
    watch = LagWatch(after_s=60, min_lag=1_000)
    # 10 events/s more arrive than are done, with a poll's jitter of up to 800 events: the
    # lag grows less in a window than it jitters
    jitter = [0, 800, 300, 650, 100, 500]
    samples = [(t, 10 * t + jitter[t // 5 % 6], 700 * t) for t in range(0, 301, 5)]
    states = feed(watch, samples)
    assert "lagging" not in states[:20]  # not always 1,000 events late yet
    assert states[-1] == "lagging"


def test_nothing_done_while_events_wait_is_stalled_and_recovery_is_ok():
    watch = LagWatch(after_s=20, min_lag=100)
    states = feed(watch, [(t, 500 + 10 * t, 5_000) for t in range(0, 41, 5)])
    assert states[-1] == "stalled"
    assert feed(watch, [(45, 0, 9_000)]) == ["ok"]


def test_a_small_lag_is_never_reported():
    watch = LagWatch(after_s=10, min_lag=1_000)
    assert set(feed(watch, [(t, 10 * t, 0) for t in range(0, 60, 2)])) == {"ok"}


def test_memory_is_one_window_of_samples():
    watch = LagWatch(after_s=10, min_lag=1)
    for t in range(10_000):
        watch.update(t, lag=1, done=t)
    assert len(watch._samples) <= 12


def test_the_monitor_logs_each_change_of_state_once(caplog):
    readings = iter([(500 + 100 * i, 1_000) for i in range(10)])
    seen = []
    monitor = HealthMonitor(
        LagWatch(after_s=0.02, min_lag=100),
        read=lambda: next(readings, (0, 2_000)),
        on_state=seen.append,
        interval_s=0.005,
        awake_at=lambda: None,  # judged by the lag alone
    )
    with caplog.at_level(logging.INFO, logger="cxstream.health"):
        monitor.start()
        while len(seen) < 15:
            time.sleep(0.005)
        monitor.stop()
        monitor.join(1)
    assert FlowHealth.STALLED in seen
    assert seen[-1] is FlowHealth.OK
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the flow is stalled" in m for m in messages) == 1
    assert sum("the flow is ok" in m for m in messages) == 1


def test_a_worker_that_has_not_woken_for_a_window_is_stalled_whatever_its_lag():
    # a blocked worker does not poll, so the consumer's lag stands still where it was (89): only
    # the heartbeat tells
    watch = LagWatch(after_s=20, min_lag=1_000)
    blocked = feed_awake(watch, [(t, 89, 5_000, 0.0) for t in range(0, 41, 5)])
    assert blocked[-1] == "stalled"
    assert "stalled" not in blocked[:4]  # not before a whole window
    # awake again and working: ok
    assert feed_awake(watch, [(45, 0, 9_000, 45.0)]) == ["ok"]
    # an idle flow wakes all the time: a small lag and nothing done is fine
    idle = LagWatch(after_s=20, min_lag=1_000)
    assert set(feed_awake(idle, [(t, 0, 5_000, float(t)) for t in range(0, 61, 5)])) == {"ok"}
    # a process whose worker never woke (it does not run the heartbeat's source) is judged by
    # its lag alone
    other = LagWatch(after_s=20, min_lag=1_000)
    assert set(feed_awake(other, [(t, 89, 5_000, None) for t in range(0, 61, 5)])) == {"ok"}


def feed_awake(watch, samples):
    return [watch.update(t, lag=lag, done=done, awake_at=a).value for t, lag, done, a in samples]


def test_the_deferred_source_beats_the_heartbeat_each_time_it_wakes():
    from cxstream.flows.connect import DeferredSource
    from cxstream.health import HEARTBEAT

    before, HEARTBEAT.last = HEARTBEAT.last, None
    try:
        source = DeferredSource(list, 60.0, wake_s=0.02)
        with contextlib.suppress(DeferredSource.Retry):  # nothing to release: it sleeps again
            source.next_item()
        assert HEARTBEAT.last is not None and time.monotonic() - HEARTBEAT.last < 5
    finally:
        HEARTBEAT.last = before


def test_partitions_added_while_the_flow_runs_are_reported_until_a_restart(caplog):
    on_broker = {"cx.qos": 8, "cx.customers": 1}
    exported = {}

    def count(topic):
        if topic == "cx.customers" and on_broker[topic] < 0:
            raise RuntimeError("broker not answering")
        return on_broker[topic]

    watch = PartitionWatch(lambda: {"cx.qos": 8, "cx.customers": 1}, count, exported.__setitem__)
    with caplog.at_level(logging.WARNING, logger="cxstream.health"):
        assert watch.check() == {"cx.qos": 0, "cx.customers": 0}
        assert not caplog.records
        on_broker["cx.qos"] = 12  # an operator added four partitions
        assert watch.check()["cx.qos"] == 4
        assert watch.check()["cx.qos"] == 4
        on_broker["cx.customers"] = -1  # cannot be asked: skipped, not a crash
        assert watch.check() == {"cx.qos": 4}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "restart every process" in warned[0] and "4 new ones" in warned[0]
    assert exported == {"cx.qos": 4, "cx.customers": 0}


def test_the_run_watches_every_kafka_input_and_exports_zero_from_the_start():
    def source(topic, now):
        s = BatchKafkaSource(["127.0.0.1:9"], [topic])
        s.listed = {topic: 2}
        s.partitions_on_broker = lambda t: now  # what the broker says
        return s

    io = FlowIO(
        qos_source=source("t-qos", 3),
        kafka_sink=None,  # type: ignore[arg-type]
        customer_source=source("t-customers", 2),
        outcome_source=source("t-outcomes", 2),
    )
    watch = partition_watch(io)
    for topic in ("t-qos", "t-customers", "t-outcomes"):
        sample = REGISTRY.get_sample_value(
            "cxstream_kafka_input_partitions_unread", {"topic": topic}
        )
        assert sample == 0
    assert watch.check() == {"t-qos": 1, "t-customers": 0, "t-outcomes": 0}
    assert (
        REGISTRY.get_sample_value("cxstream_kafka_input_partitions_unread", {"topic": "t-qos"}) == 1
    )
