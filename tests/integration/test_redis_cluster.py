"""Customer context on a real Redis Cluster: lookups spread over hash slots, writes pipelined."""

from __future__ import annotations

import base64
import time

import pytest
from pydantic import SecretStr
from redis.cluster import RedisCluster

from cxstream.clients import context_client
from cxstream.context import ContextStore
from cxstream.events import CustomerContext
from cxstream.settings import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_cluster):
    settings = load_settings(
        overrides={
            "redis": {
                "url": "redis://127.0.0.1:1/0",  # the rest of the state: not used here
                "context_url": redis_cluster,
                "context_cluster": True,
            }
        }
    )
    client = context_client(settings)
    assert isinstance(client, RedisCluster)
    yield ContextStore(client, prefix="cxtest", max_entries=0)
    client.close()


def test_profiles_written_and_read_back_across_slots(store):
    customers = [
        CustomerContext(subscriber_id=f"sub-{i:05d}", monthly_charge=float(i)) for i in range(500)
    ]
    store.put_many(customers)
    slots = {RedisCluster.keyslot(store._client, store.key(c.subscriber_id)) for c in customers}
    nodes = {store._client.get_node_from_key(store.key(c.subscriber_id)).name for c in customers}
    assert len(slots) > 100 and len(nodes) == 3  # the batch really spans the cluster
    ids = [c.subscriber_id for c in customers] + ["sub-absent"]
    found = store.get_many(ids)
    assert [found[c.subscriber_id].customer.monthly_charge for c in customers] == [
        float(i) for i in range(500)
    ]
    assert found["sub-absent"].customer is None and not found["sub-absent"].stale


def test_history_and_audit_on_the_cluster(store):
    store.append_history(
        [("sub-a", 1_700_000_000.0, 81.5), ("sub-b", 1_700_000_001.0, 40.0)], keep=10
    )
    store.append_history([("sub-a", 1_700_000_002.0, 79.0)], keep=10)
    assert store.history("sub-a") == [(1_700_000_000.0, 81.5), (1_700_000_002.0, 79.0)]
    store.audit(["e1", "e2", "e2"], "cxtest:audit", 60)
    assert store._client.scard("cxtest:audit") == 2


def test_a_cluster_that_cannot_be_reached_is_a_clear_error():
    from cxstream.errors import ServiceError

    settings = load_settings(
        overrides={"redis": {"url": "redis://127.0.0.1:1/0", "context_cluster": True}}
    )
    with pytest.raises(ServiceError, match="Redis Cluster"):
        context_client(settings)


@pytest.mark.slow
def test_the_dataflow_enriches_from_a_cluster(live_settings, redis_cluster, tmp_path):
    from datetime import timedelta

    from cxstream.devtools.flowprocess import FlowProcess
    from cxstream.devtools.simulate import Simulator
    from cxstream.events import utcnow
    from tests.integration.kafka_helpers import produce

    settings = live_settings.model_copy(
        update={
            "redis": live_settings.redis.model_copy(
                update={"context_url": SecretStr(redis_cluster), "context_cluster": True}
            )
        }
    )
    sim = Simulator(300, 12, seed=5)
    client = context_client(settings)
    ContextStore(client, prefix=settings.redis.key_prefix).put_many(list(sim.profiles()))
    times = sim.timeline(utcnow() - timedelta(seconds=30), 200, diurnal=False)
    records = [sim.encoded(next(times)) for _ in range(3000)]
    produce(settings, settings.kafka.topics.qos, records)
    flow = FlowProcess(
        settings, tmp_path, "whsec_" + base64.b64encode(b"redis-cluster-test-secret").decode()
    )
    try:
        flow.wait_ready()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counters = flow.counters()
            if counters.get("cxstream_events_total", 0) >= len(records):
                break
            time.sleep(0.5)
    finally:
        flow.stop()
    assert counters.get("cxstream_events_total{outcome=processed}", 0) == len(records)
    # every subscriber's profile was found on the cluster (fetched once, then cached)
    assert counters.get("cxstream_enrichment_lookups_total{result=miss}", 0) >= 250
    assert counters.get("cxstream_enrichment_lookups_total{result=absent}", 0) == 0
    assert counters.get("cxstream_enrichment_lookups_total{result=stale}", 0) == 0
    client.close()


@pytest.mark.slow
def test_a_node_that_hangs_costs_one_timeout_and_a_cluster_down_is_an_outage():
    # An own cluster: its nodes are frozen and stopped here. Unguarded, one frozen node held
    # this lookup for more than five minutes (redis-py's cluster client retried it ten times,
    # each waiting a timeout), and with every node down it raised an exception that is not a
    # redis.RedisError, which the steps do not catch.
    import os
    import signal

    import redis

    from cxstream.context import MergePending
    from cxstream.events import CustomerUpdate
    from tests.conftest import redis_cluster_nodes

    tickets = frozenset({"open_tickets"})
    with redis_cluster_nodes() as (url, nodes):
        settings = load_settings(
            overrides={
                "redis": {
                    "url": "redis://127.0.0.1:1/0",
                    "context_url": url,
                    "context_cluster": True,
                    "socket_timeout_s": 0.5,
                }
            }
        )
        store = ContextStore(context_client(settings), prefix="cxhang", max_entries=0)
        store.put_many([CustomerContext(subscriber_id=f"s{i}") for i in range(300)])
        ids = [f"s{i}" for i in range(300)]
        frozen = f"127.0.0.1:{nodes[2].port}"
        on_frozen = {i for i in ids if store._client.get_node_from_key(store.key(i)).name == frozen}
        assert 0 < len(on_frozen) < len(ids)
        os.kill(nodes[2].proc.pid, signal.SIGSTOP)
        try:
            took = []
            for _ in range(3):
                t0 = time.monotonic()
                found = store.get_many(ids)
                took.append(time.monotonic() - t0)
                # only the frozen node's profiles are unknown; the others are read
                assert {i for i in ids if found[i].stale} == on_frozen
                assert all(found[i].customer is not None for i in ids if i not in on_frozen)
            # updates too: those of the nodes that answer are applied, the others wait
            updates = [
                CustomerUpdate(CustomerContext(subscriber_id=i, open_tickets=1), tickets, b"")
                for i in ids
            ]
            with pytest.raises(MergePending) as pending:
                store.merge_many(updates)
            assert {u.customer.subscriber_id for u in pending.value.pending} == on_frozen
            found = store.get_many(ids)
            assert all(found[i].customer.open_tickets == 1 for i in ids if i not in on_frozen)
        finally:
            os.kill(nodes[2].proc.pid, signal.SIGCONT)
        assert took[0] < 3.0, took  # one socket timeout (0.5 s), not one per retry
        assert max(took[1:]) < 0.5, took  # then at once, while the node is taken as down
        deadline = time.monotonic() + 15
        while any(v.stale for v in store.get_many(ids).values()):  # tried again within 8 s
            assert time.monotonic() < deadline, "the thawed node was not read again"
            time.sleep(0.2)
        for node in nodes:
            node.stop()
        found = store.get_many(ids)
        assert all(found[i].stale for i in ids)
        with pytest.raises(redis.ConnectionError):  # what every caller handles as an outage
            store.put_many([CustomerContext(subscriber_id="s1")])
