"""The Redis ledger (a Lua script) answers exactly as the in-memory one on the same cases."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
import redis

from cxstream.actions.ledger import (
    CapCheck,
    Contact,
    DeferredQueue,
    ExperimentLedger,
    MemoryLedger,
    RedisLedger,
)
from cxstream.actions.retries import RedisRetryStore, retry_key
from cxstream.events import Action, utcnow
from tests.unit.actions.test_webhook import action as webhook_action

pytestmark = pytest.mark.integration

T = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def contact(action_id, sub="s1", *, caps=(), budget=0):
    return Contact(
        action_id=action_id,
        cooldown_key=f"cx:cooldown:{sub}:degradation",
        cooldown_s=100.0,
        caps=tuple(caps),
        budget_key="cx:budget:h",
        budget=budget,
    )


CAP = CapCheck("cx:cap:s1:sms:24", max=2, window_s=50.0, name="cap:sms:24h")
HCAP = CapCheck("cx:household_cap:a1:any:24", max=1, window_s=50.0, name="household_cap:any:24h")


SCRIPT = [
    # (now, contacts, expected)
    (0.0, [contact("a1")], ["ok"]),
    (1.0, [contact("a1")], ["replay"]),
    (2.0, [contact("a2")], ["cooldown"]),
    (101.0, [contact("a3")], ["ok"]),
    (
        102.0,
        [
            contact("b1", "x", caps=[CAP]),
            contact("b2", "y", caps=[CAP]),
            contact("b3", "z", caps=[CAP]),
        ],
        ["ok", "ok", "cap:sms:24h"],
    ),
    (160.0, [contact("b4", "w", caps=[CAP])], ["ok"]),  # the window slid past the first two
    (
        161.0,
        [contact("c1", "m1", caps=[HCAP]), contact("c2", "m2", caps=[HCAP])],
        ["ok", "household_cap:any:24h"],
    ),
    (162.0, [contact("d1", "p", budget=1), contact("d2", "q", budget=1)], ["ok", "budget"]),
]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_ledgers_agree(kind, redis_conn):
    ledger = MemoryLedger() if kind == "memory" else RedisLedger(redis_conn)
    for now, contacts, expected in SCRIPT:
        assert ledger.try_contact(contacts, now) == expected, (now, kind)


def test_deferred_queue_in_redis_releases_only_due_actions_once(redis_conn):
    queue = DeferredQueue(redis_conn, key="cx:deferred:test")
    other = DeferredQueue(redis_conn, key="cx:deferred:test")  # a second worker
    for i, due in enumerate((10.0, 20.0, 30.0)):
        queue.push(
            due,
            Action(
                action_id=f"a{i}",
                kind="area_notice",
                subscriber_id="s",
                channel="sms",
                reason="cell_incident",
                alert_id="i",
                event_time=T,
                created_at=T,
            ),
        )
    assert [a.action_id for a in queue.pop_due(25.0)] == ["a0", "a1"]
    assert other.pop_due(25.0) == []
    assert len(queue) == 1
    assert [a.action_id for a in other.pop_due(99.0)] == ["a2"]


def test_experiment_ledger_in_redis_survives_a_new_client(redis_conn):
    first = ExperimentLedger(redis_conn, prefix="cxt")
    first.assign("s1", "treated", None)
    first.assign("s1", "control", None)  # the first assignment stands
    first.assign("s2", "control", None)
    again = ExperimentLedger(redis_conn, prefix="cxt")  # e.g. after a restart
    assert again.outcome("s1", "offer_accepted") == "treated"
    assert again.outcome("s2", "churned") == "control"
    assert again.outcome("nobody", "churned") is None
    report = again.report()
    assert report["treated"] == {"subjects": 1.0, "offer_accepted": 1.0, "churned": 0.0}
    assert report["control"]["churned"] == 1.0
    assert report["uplift"]["churned"] == 1.0


def test_waiting_delivery_rounds_in_redis_outlive_the_client_and_bad_entries_are_dropped(
    redis_conn,
):
    key = retry_key("cx", "webhook-0")
    first = RedisRetryStore(redis_conn, key)
    action = Action(
        action_id="inc-1:s1:area_notice", kind="area_notice", subscriber_id="s1", channel="sms",
        reason="cell_incident", alert_id="inc-1", event_time=utcnow(), created_at=utcnow(),
    )  # fmt: skip
    first.put(action, 2, 1_900_000_000.0)
    redis_conn.hset(key, "junk", b"not json")
    redis_conn.hset(key, "bad", orjson.dumps({"action": {"action_id": "x"}, "round": 1, "due": 0}))
    where = redis_conn.connection_pool.connection_kwargs
    again = RedisRetryStore(redis.Redis(host=where["host"], port=where["port"]), key)
    assert again.load() == [(action, 2, 1_900_000_000.0)]
    assert redis_conn.hkeys(key) == [action.action_id.encode()]  # the unreadable ones dropped
    again.remove(action.action_id)
    assert again.load() == []


def test_rounds_waiting_in_removed_partitions_are_adopted_once_by_the_remaining_ones(redis_conn):
    # four partitions held rounds; the flow now runs two: every round is re-queued, by one of them
    actions = [webhook_action(i) for i in range(40)]
    for i, action in enumerate(actions):
        RedisRetryStore(redis_conn, retry_key("cx", f"webhook-{i % 4}")).put(action, 1, 1.0e9 + i)
    RedisRetryStore(redis_conn, retry_key("other", "webhook-3")).put(actions[0], 1, 0.0)
    parts = ["webhook-0", "webhook-1"]
    stores = [RedisRetryStore(redis_conn, retry_key("cx", p)) for p in parts]
    moved = [store.adopt("cx", p, parts) for store, p in zip(stores, parts, strict=True)]
    assert sum(moved) == 20 and min(moved) > 0  # the 20 of webhook-2 and -3, shared
    loaded = [{a.action_id: (r, due) for a, r, due in store.load()} for store in stores]
    assert not loaded[0].keys() & loaded[1].keys()
    assert loaded[0] | loaded[1] == {a.action_id: (1, 1.0e9 + i) for i, a in enumerate(actions)}
    assert not redis_conn.exists(retry_key("cx", "webhook-2"), retry_key("cx", "webhook-3"))
    assert redis_conn.hlen(retry_key("other", "webhook-3")) == 1  # another deployment's
    assert [store.adopt("cx", p, parts) for store, p in zip(stores, parts, strict=True)] == [0, 0]
