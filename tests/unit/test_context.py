from __future__ import annotations

import random

import pytest

from cxstream import metrics
from cxstream.context import ContextStore
from cxstream.errors import ServiceError
from cxstream.events import CustomerContext
from tests.fakes import FakeRedis


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def sample(result):
    return metrics.ENRICHMENT.labels(result)._value.get()


@pytest.fixture
def setup():
    client, clock = FakeRedis(), Clock()
    store = ContextStore(client, ttl_s=30, max_entries=3, clock=clock)
    store.put_many([CustomerContext(subscriber_id=f"s{i}", monthly_charge=i) for i in range(3)])
    return client, clock, ContextStore(client, ttl_s=30, max_entries=3, clock=clock)


def test_one_mget_per_batch_then_cache_hits(setup):
    client, _, store = setup
    before = {r: sample(r) for r in ("hit", "miss", "absent")}
    found = store.get_many(["s0", "s1", "s1", "nobody"])
    assert client.mget_calls == 1
    assert found["s1"].customer.monthly_charge == 1
    assert found["nobody"].customer is None
    store.get_many(["s0", "s1", "nobody"])
    assert client.mget_calls == 1  # all cached, including the negative answer
    assert sample("miss") - before["miss"] == 2
    assert sample("absent") - before["absent"] == 1
    assert sample("hit") - before["hit"] == 3


def test_cache_entries_expire(setup):
    client, clock, store = setup
    store.get_many(["s0"])
    clock.t += 31
    store.get_many(["s0"])
    assert client.mget_calls == 2


def test_cache_is_bounded(setup):
    _, _, store = setup
    store.get_many(["s0", "s1", "s2", "x", "y"])
    assert len(store._cache) == 3


def test_redis_outage_serves_last_known_context_marked_stale(setup):
    client, clock, store = setup
    store.get_many(["s0"])
    clock.t += 60  # cache expired
    client.down = True
    before = sample("stale")
    found = store.get_many(["s0", "s1"])
    assert found["s0"].stale and found["s0"].customer.subscriber_id == "s0"
    assert found["s1"].stale and found["s1"].customer is None
    assert sample("stale") - before == 2
    with pytest.raises(ServiceError, match="cannot reach Redis"):
        store.ping()
    client.down = False
    assert not store.get_many(["s1"])["s1"].stale  # recovers by itself


def test_invalid_stored_profile_is_treated_as_absent(setup):
    client, _, store = setup
    client.data[store.key("broken")] = b'{"subscriber_id": ""}'
    assert store.get_many(["broken"])["broken"].customer is None


def test_experience_history_is_appended_in_one_round_trip_and_bounded(setup):
    client, _, store = setup
    store.append_history([("s1", 100.0, 90.0), ("s1", 400.0, 35.5), ("s2", 100.0, 80.0)], keep=2)
    store.append_history([("s1", 700.0, 60.0)], keep=2)
    assert store.history("s1") == [(400.0, 35.5), (700.0, 60.0)]
    assert store.history("s2") == [(100.0, 80.0)]
    client.down = True
    store.append_history([("s1", 1000.0, 1.0)], keep=2)  # an outage loses samples, not events


def test_history_keeps_minutes_for_recent_hours_and_one_sample_per_slot_for_days(setup):
    _, _, store = setup
    # one sample a minute for 20 minutes; slots of 5 minutes; the recent list keeps 6
    samples = [("s1", 60.0 * m, float(m)) for m in range(20)]
    store.append_history(samples, keep=100, recent_keep=6, slot_s=300.0, recent_s=60.0)
    history = store.history("s1")
    # the long list: the first sample of each 5-minute slot, up to where the recent list begins
    assert history[:3] == [(0.0, 0.0), (300.0, 5.0), (600.0, 10.0)]
    assert history[3:] == [(60.0 * m, float(m)) for m in range(14, 20)]  # every minute lately
    assert [t for t, _ in history] == sorted(t for t, _ in history)


def test_the_recent_history_keeps_the_cell_of_each_sample_and_the_long_one_does_not(setup):
    client, _, store = setup
    samples = [("s1", 60.0 * m, 80.0, f"cell-{m // 10}") for m in range(20)]
    store.append_history(samples, keep=100, recent_keep=6, slot_s=300.0, recent_s=60.0)
    seen = store.samples("s1")
    assert seen[:3] == [(0.0, 80.0, None), (300.0, 80.0, None), (600.0, 80.0, None)]
    assert seen[3:] == [(60.0 * m, 80.0, "cell-1") for m in range(14, 20)]
    assert store.history("s1") == [(t, v) for t, v, _ in seen]
    # entries written without a cell, and one that does not parse, are read as they can be
    client.lists[store.recent_history_key("s2")] = [b"60:70.0", b"junk", b"120:71.5:cell:7"]
    assert store.samples("s2") == [(60.0, 70.0, None), (120.0, 71.5, "cell:7")]


def test_log_lines_carry_a_pseudonym_never_the_subscriber_id(setup, caplog):
    client, _, store = setup
    client.data[store.key("sub-4155550123")] = b'{"subscriber_id": ""}'
    store.get_many(["sub-4155550123"])
    assert "sub#" in caplog.text
    assert "4155550123" not in caplog.text


def test_entries_fetched_together_expire_spread_over_the_last_quarter_of_the_ttl():
    client, clock = FakeRedis(), Clock()
    ids = [f"s{i}" for i in range(200)]
    store = ContextStore(client, ttl_s=40, max_entries=1000, clock=clock, rng=random.Random(3))
    store.get_many(ids)
    expiries = sorted(entry[0] for entry in store._cache.values())
    assert expiries[0] >= 30 and expiries[-1] <= 40  # between 0.75 and 1.0 of the TTL
    assert expiries[-1] - expiries[0] > 8  # spread, not one instant
    clock.t = 35  # about half of them are due again: one MGET for those only
    client.mget_calls = 0
    store.get_many(ids)
    assert client.mget_calls == 1
    assert 50 < sum(1 for e in store._cache.values() if e[0] > 60) < 150
