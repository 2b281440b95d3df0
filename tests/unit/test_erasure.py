"""Erasing a customer from what the flow and the dashboard hold in memory (the Redis side is
tests/integration/test_erasure.py)."""

from __future__ import annotations

import base64
import math
import pickle

import numpy as np
import orjson
import pytest
import redis

from cxstream.actions.rules import DEFAULT_POLICY, PolicySource
from cxstream.actions.store import MemoryClaimStore
from cxstream.batches import RawBatch
from cxstream.context import ContextStore
from cxstream.dashboard.state import DashboardState
from cxstream.detectors.table import SubscriberTable
from cxstream.erasure import ErasurePending
from cxstream.events import BadEvent, CustomerContext, CustomerErasure, CustomerUpdate
from cxstream.flows.sinks import _CustomerPartition
from cxstream.pipeline import Pipeline
from cxstream.qos import QOS
from cxstream.settings import load_settings
from cxstream.steps.detect import Erasures
from cxstream.steps.ingest import parse_customer_batch
from tests.fakes import FakeRedis


def observe(table, subscribers, value):
    n = len(subscribers)
    m = np.full((n, len(QOS.columns)), math.nan)
    m[:, QOS.column("rtt_ms")] = value
    table.observe(
        list(subscribers),
        np.arange(n, dtype=float),
        np.zeros(n, dtype=np.int8),
        m,
        np.full(n, math.nan),
    )


def test_a_table_forgets_a_subscriber_and_keeps_the_others_state():
    table = SubscriberTable()
    observe(table, ["a", "b", "c"] * 4, 40.0)
    observe(table, ["c"] * 3, 400.0)  # c's state differs from a's

    def state(sid):
        row = table.index[sid]
        return table.n[row], str(table.mean[row].tolist()), table.z[row]

    before_c, before_b = state("c"), state("b")
    assert table.forget(["a", "zz"]) == 1
    assert set(table.index) == {"b", "c"} and len(table) == 2
    assert state("c") == before_c
    assert state("b") == before_b
    observe(table, ["a"], 40.0)  # a comes back as a new subscriber
    assert table.n[table.index["a"]] == 1
    pickle.loads(pickle.dumps(table))


def test_every_table_applies_the_erasures_it_has_not_seen():
    erasures = Erasures(keep=2)
    one, two = SubscriberTable(), SubscriberTable()
    for t in (one, two):
        observe(t, ["a", "b", "c"], 40.0)
    erasures.add(["a"])
    erasures.apply(one)
    assert set(one.index) == {"b", "c"}
    erasures.add(["b", "c"])  # "a" falls out of the kept list
    erasures.apply(one)
    erasures.apply(two)  # two never looked: it checks all that are kept
    assert set(one.index) == set()
    assert set(two.index) == {"a"}
    restored = pickle.loads(pickle.dumps(one))
    erasures.apply(restored)  # nothing new
    assert len(restored) == 0


def test_a_tombstone_on_the_customers_topic_is_an_erasure():
    batch = RawBatch(
        "cx.customers",
        0,
        [b'{"subscriber_id": "s1", "open_tickets": 1}', None, None, None],
        [10, 11, 12, 13],
        {11: b"s1", 12: b"../etc"},
    )
    update, erased, bad_key, no_key = parse_customer_batch(batch.messages())
    assert isinstance(update, CustomerUpdate) and update.fields == {"open_tickets"}
    assert erased == CustomerErasure("s1", "cx.customers", 0, 11)
    assert isinstance(bad_key, BadEvent) and bad_key.reason == "bad_id"
    assert isinstance(no_key, BadEvent) and no_key.offset == 13


def test_the_customer_sink_erases_in_order_and_waits_for_redis():
    redis = FakeRedis()
    store = ContextStore(redis)
    erased: list[list[str]] = []

    def erase(ids):
        redis._check()
        erased.append(list(ids))

    part = _CustomerPartition(store, None, "dlq", erase)
    redis.down = True
    part.write_batch([CustomerErasure("s1")])
    assert erased == []  # Redis down: it waits
    redis.down = False
    part.write_batch([])
    assert erased == [["s1"]]


def test_the_dashboard_drops_an_erased_customer_and_ignores_later_records():
    state = DashboardState()
    alarm = {
        "@type": "Alarm",
        "id": "inc-1",
        "alarmedObject": {"id": "c1"},
        "state": "raised",
        "perceivedSeverity": "major",
        "affectedService": [{"id": "s1"}, {"id": "s2"}, {"id": "s3"}],
        "x-cxstream": {
            "new_affected": ["s1", "s2"],
            "affected_tiers": {"s1": "gold", "s2": "silver", "s3": "gold"},
        },
    }
    state.on_alert(alarm)
    state.on_alert({"kind": "degradation", "subscriber_id": "s1", "cell_id": "c1"})
    decision = {"subscriber_id": "s1", "result": "sent", "kind": "k", "action_id": "a1"}
    state.on_decision(decision)
    state.on_delivery({"action_id": "a1", "subscriber_id": "s1", "status": "delivered"})
    assert state.customer("s1")["summary"] is not None
    state.forget("s1")
    state.on_decision({**decision, "action_id": "a2"})  # read after the tombstone
    page = state.customer("s1")
    assert page == {
        "summary": None,
        "alerts": [],
        "incidents": [],
        "decisions": [],
        "actions": [],
        "outcomes": [],
    }
    assert state.search("s1") == []
    overview = state.overview()
    assert "s1" not in str(overview)
    assert overview["incidents"][0]["affected"] == 3  # the count stays, the id goes
    assert b'"s1"' not in state.dumps()  # nor anywhere in the state saved in Redis
    state.forget("s3")  # a second erasure from the same incident keeps the first's tier
    tiers = state.dump()["incidents"][0]["x-cxstream"]["affected_tiers"]
    assert sorted(tiers.values()) == ["gold", "gold", "silver"] and "s3" not in tiers
    state.restore("s1")
    state.on_decision({**decision, "action_id": "a3"})
    assert state.customer("s1")["decisions"]


def test_the_dashboards_saved_state_names_no_erased_customer_and_still_ignores_them():
    key, retired = b"k" * 32, b"old" * 11
    state = DashboardState(erasure_keys=[key, retired])
    state.on_decision({"subscriber_id": "sub-0000390", "result": "sent", "kind": "k"})
    state.forget("sub-0000390")
    saved = state.dumps()
    assert b"sub-0000390" not in saved  # the list of erased customers holds digests only
    again = DashboardState(erasure_keys=[key])  # a restart loads it
    again.load(orjson.loads(saved))
    again.on_decision({"subscriber_id": "sub-0000390", "result": "sent", "kind": "k"})
    assert again.customer("sub-0000390")["decisions"] == []
    # one erased under the key being retired is still recognised
    before = DashboardState(erasure_keys=[retired])
    before.forget("s9")
    rotated = DashboardState(erasure_keys=[key, retired])
    rotated.load(orjson.loads(before.dumps()))
    assert "s9" in rotated.erased and "s8" not in rotated.erased
    # ... and, once recognised, filed under the new key: the rotation may end
    after = DashboardState(erasure_keys=[key])
    after.load(orjson.loads(rotated.dumps()))
    after.on_decision({"subscriber_id": "s9", "result": "sent", "kind": "k"})
    assert after.customer("s9")["decisions"] == []
    # a state saved with ids in the clear is read, and saved again as digests
    legacy = DashboardState(erasure_keys=[key])
    legacy.load({**orjson.loads(DashboardState().dumps()), "erased": ["s7"]})
    assert "s7" in legacy.erased and b"s7" not in legacy.dumps()


def test_with_a_cluster_node_down_only_its_customers_updates_wait():
    # a consent withdrawn for a customer on a node that answers must not wait for another node
    from cxstream.context import MergePending
    from cxstream.events import CustomerContext

    class HalfCluster:
        def __init__(self):
            self.down = {"s2"}
            self.applied = []

        def merge_many(self, batch):
            pending = [u for u in batch if u.customer.subscriber_id in self.down]
            self.applied += [u.customer.subscriber_id for u in batch if u not in pending]
            if pending:
                raise MergePending(pending, ConnectionError("node 2 does not answer"))

    class Dlq:
        def __init__(self):
            self.values = []

        def produce(self, topic, value, key, **kwargs):
            self.values.append(value)

        def flush(self, timeout):
            return 0

    def update(sid):
        customer = CustomerContext(subscriber_id=sid)
        return CustomerUpdate(customer, frozenset({"consent"}), f"raw-{sid}".encode())

    store, dlq = HalfCluster(), Dlq()
    part = _CustomerPartition(store, dlq, "dlq")
    part.write_batch([update("s1"), update("s2"), update("s3")])
    assert store.applied == ["s1", "s3"]
    assert [u.customer.subscriber_id for u in part._waiting] == ["s2"]
    [dead] = [BadEvent.model_validate_json(v) for v in dlq.values]  # only s2's is dead-lettered
    assert dead.raw_b64 == base64.b64encode(b"raw-s2").decode()
    store.down = set()
    part.write_batch([update("s4")])
    assert store.applied == ["s1", "s3", "s2", "s4"] and part._waiting == []


def test_an_erasure_forgets_at_once_and_retries_only_the_customers_redis_did_not_answer_for():
    # On a Redis Cluster with one node down, the customers whose keys live elsewhere are erased
    # now; every erased customer is forgotten in memory at once, whatever Redis does.
    class Eraser:
        def __init__(self):
            self.down = {"s2"}
            self.erased = []

        def erase(self, sid):
            if sid in self.down:
                raise redis.ConnectionError("node 2 does not answer")
            self.erased.append(sid)

    settings = load_settings()
    context = ContextStore(FakeRedis())
    context.put_many([CustomerContext(subscriber_id=s) for s in ("s1", "s2", "s3")])
    context.get_many(["s1", "s2", "s3"])  # cached
    eraser = Eraser()
    pipeline = Pipeline(
        settings,
        context=context,
        claims=MemoryClaimStore(),
        policy=PolicySource(None, default=DEFAULT_POLICY),
        eraser=eraser,
    )
    forgotten = []
    pipeline.detect_step.erasures.add = forgotten.extend
    with pytest.raises(ErasurePending) as failed:
        pipeline.erase_customers(["s1", "s2", "s3"])
    assert failed.value.pending == ["s2"] and isinstance(failed.value, redis.ConnectionError)
    assert eraser.erased == ["s1", "s3"] and forgotten == ["s1", "s2", "s3"]
    assert not context._cache  # the cached profiles are gone, s2's too
    eraser.down = set()
    pipeline.erase_customers(["s2"])  # asked again for the one left
    assert eraser.erased == ["s1", "s3", "s2"] and forgotten == ["s1", "s2", "s3", "s2"]

    # the customer sink keeps only the pending ones
    calls, down = [], {"s2"}

    def erase(ids):
        calls.append(list(ids))
        if down & set(ids):
            raise ErasurePending(sorted(down & set(ids)), redis.ConnectionError("node 2"))

    part = _CustomerPartition(ContextStore(FakeRedis()), None, "dlq", erase)
    part.write_batch([CustomerErasure("s2"), CustomerErasure("s1")])
    assert calls == [["s2"], ["s2", "s1"], ["s2"]]  # s1 is not held back by s2
    down.clear()
    part.write_batch([])
    assert calls[-1] == ["s2"] and part._erasing == []
