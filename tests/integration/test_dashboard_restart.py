"""A restarted dashboard shows what it showed, from its state saved in Redis, and reads each
topic on from where it was: nothing is read again from the beginning."""

from __future__ import annotations

import time

import orjson
import pytest

from cxstream.clients import ensure_topics
from cxstream.dashboard.feed import KafkaFeed
from cxstream.dashboard.state import DashboardState
from tests.integration.kafka_helpers import produce
from tests.integration.test_pipeline_live import wait_for
from tests.unit.test_dashboard_app import ALARM

pytestmark = pytest.mark.integration


def decision(n):
    return {"subscriber_id": "s1", "signal": "cell_incident", "kind": "area_notice",
            "result": "sent", "rule": "r", "action_id": f"a{n}",
            "decided_at": f"2026-01-01T00:00:0{n}+00:00"}  # fmt: skip


class CountingState(DashboardState):
    """Counts the records handed to it (each is one record read from a topic)."""

    def __init__(self):
        super().__init__()
        self.read = 0

    def on_alert(self, record):
        self.read += 1
        super().on_alert(record)

    def on_decision(self, record):
        self.read += 1
        super().on_decision(record)


def test_a_restarted_dashboard_resumes_its_state_and_offsets(live_settings, redis_conn):
    settings = live_settings
    topics = settings.kafka.topics
    ensure_topics(settings)
    produce(settings, topics.alerts, [(b"c1", orjson.dumps(ALARM))])
    produce(settings, topics.decisions, [(b"s1", orjson.dumps(decision(n))) for n in (1, 2)])
    key = f"{settings.redis.key_prefix}:dashboard:state"

    first = CountingState()
    feed = KafkaFeed(settings, first, store=redis_conn, key=key, save_s=0.2).start()
    wait_for(lambda: first.read == 3, 30, "the first dashboard to read the three records")
    first.acknowledge("inc-c1-1", "olga", "2026-01-01T00:01:00+00:00")
    feed.stop()
    assert redis_conn.exists(key)

    # while it was down, one more decision
    produce(settings, topics.decisions, [(b"s1", orjson.dumps(decision(3)))])
    second = CountingState()
    feed = KafkaFeed(settings, second, store=redis_conn, key=key, save_s=0.2).start()
    try:
        wait_for(lambda: feed.resumed, 30, "the saved state to load")
        wait_for(lambda: second.read >= 1, 30, "the new decision")
        time.sleep(1.0)  # anything read again would arrive by now
    finally:
        feed.stop()
    assert second.read == 1  # only the new record: the old ones were not read again
    overview = second.overview()
    assert [i["id"] for i in overview["incidents"]] == ["inc-c1-1"]
    assert overview["incidents"][0]["ack"] == {"by": "olga", "at": "2026-01-01T00:01:00+00:00"}
    page = second.customer("s1")
    assert [d["action_id"] for d in page["decisions"]] == ["a3", "a2", "a1"]


def test_on_new_topics_the_saved_offsets_are_not_used(live_settings, redis_conn):
    """The demo replaces its embedded broker (the topics are new; flow.inputs_from_start) and the
    dashboard resumes from its saved state: the offsets saved on the old topics are past the
    new ones' ends, and the embedded broker does not answer out of range there (which would
    reset them): the consumer waited, and the dashboard showed nothing new until each topic
    grew past its old offset (in the demo, nothing after its first replacement at 10 minutes)."""
    settings = live_settings
    topics = settings.kafka.topics
    ensure_topics(settings)
    key = f"{settings.redis.key_prefix}:dashboard:state"
    state = DashboardState()
    state.on_decision(decision(1))  # shown before the replacement, kept after it
    every = [
        [t, p, 999] for t in (topics.alerts, topics.decisions) for p in range(topics.partitions)
    ]
    redis_conn.set(key, orjson.dumps({"state": state.dump(), "offsets": every}))
    produce(settings, topics.alerts, [(b"c1", orjson.dumps(ALARM))])
    produce(settings, topics.decisions, [(b"s1", orjson.dumps(decision(2)))])
    new_topics = settings.model_copy(
        update={"flow": settings.flow.model_copy(update={"inputs_from_start": True})}
    )
    counting = CountingState()
    feed = KafkaFeed(new_topics, counting, store=redis_conn, key=key, save_s=0.2).start()
    try:
        wait_for(lambda: feed.resumed, 30, "the saved state to load")
        wait_for(lambda: counting.read == 2, 30, "the new topics' records, from their start")
    finally:
        feed.stop()
    assert [i["id"] for i in counting.overview()["incidents"]] == ["inc-c1-1"]
    assert [d["action_id"] for d in counting.customer("s1")["decisions"]] == ["a2", "a1"]


def test_a_restart_with_nothing_new_reads_nothing_again(live_settings, redis_conn):
    """Nothing is read twice when nothing new came, though the last records came in one batch:
    the embedded broker lists a partition's end as if its last batch were one record, and a
    dashboard that checked its saved offsets against those ends read every topic again."""
    settings = live_settings
    topics = settings.kafka.topics
    ensure_topics(settings)
    produce(settings, topics.decisions, [(b"s1", orjson.dumps(decision(n))) for n in (1, 2, 3)])
    key = f"{settings.redis.key_prefix}:dashboard:state"
    first = CountingState()
    feed = KafkaFeed(settings, first, store=redis_conn, key=key, save_s=0.2).start()
    wait_for(lambda: first.read == 3, 30, "the first dashboard to read the three records")
    feed.stop()

    second = CountingState()
    feed = KafkaFeed(settings, second, store=redis_conn, key=key, save_s=0.2).start()
    try:
        wait_for(lambda: feed.resumed, 30, "the saved state to load")
        time.sleep(1.5)  # anything read again would arrive by now
    finally:
        feed.stop()
    assert second.read == 0
    assert [d["action_id"] for d in second.customer("s1")["decisions"]] == ["a3", "a2", "a1"]


def test_an_erased_customer_leaves_the_saved_state_at_once(live_settings, redis_conn):
    """The saved state is written again as soon as a tombstone is read, not at the next
    interval: a process that stops short (a kill) must not bring the customer back."""
    settings = live_settings
    topics = settings.kafka.topics
    ensure_topics(settings)
    produce(settings, topics.decisions, [(b"s1", orjson.dumps(decision(1)))])
    key = f"{settings.redis.key_prefix}:dashboard:state"
    state = CountingState()
    feed = KafkaFeed(settings, state, store=redis_conn, key=key, save_s=3600).start()
    try:
        wait_for(lambda: state.read == 1, 30, "the customer's decision")
        assert redis_conn.get(key) is None  # the interval's save is an hour away
        produce(settings, topics.customers, [(b"s1", None)])
        wait_for(lambda: redis_conn.get(key) is not None, 10, "the erasure saved")
        saved = orjson.loads(redis_conn.get(key))
        assert b'"s1"' not in redis_conn.get(key) and saved["state"]["erased"]
    finally:
        feed.stop()
