"""The hot path as the Kafka source runs it (a poll per partition at a time), without sockets."""

from __future__ import annotations

import zlib
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from cxstream.actions.rules import DEFAULT_POLICY, PolicySource
from cxstream.actions.store import MemoryClaimStore
from cxstream.batches import RawBatch
from cxstream.context import ContextStore
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.errors import ConfigError
from cxstream.events import BadEvent, CellIncident, utcnow
from cxstream.flows.routing import shard_keys
from cxstream.pipeline import Pipeline
from cxstream.settings import load_settings
from tests.fakes import FakeRedis


def test_a_backlog_read_a_poll_per_partition_still_opens_the_cell_incident():
    """Two partitions' polls each span the whole backlog's event time; merged in event-time
    order before demarcation, the outage is still one incident (it was not, before the sort)."""
    settings = load_settings()
    sim = Simulator(200, 12, seed=31, bad_ratio=0.01)
    cell = "cell-0003"
    start = utcnow() - timedelta(seconds=60)
    sim.add_incidents(
        [
            Incident(
                "cell_outage", cell, start + timedelta(seconds=20), start + timedelta(seconds=50)
            )
        ]
    )
    times = sim.timeline(start, 200, diurnal=False)
    partitions: dict[int, list[bytes]] = {0: [], 1: []}
    for key, value in (sim.encoded(next(times)) for _ in range(12_000)):
        partitions[zlib.crc32(key or b"") % 2].append(value)
    context = ContextStore(FakeRedis())
    context.put_many(list(sim.profiles()))
    keys = shard_keys(settings.flow.shards)
    pipeline = Pipeline(
        settings,
        context=context,
        claims=MemoryClaimStore(),
        policy=PolicySource(None, default=DEFAULT_POLICY),
        shard_keys=keys,
    )
    tables = {p: pipeline.new_poll_state() for p in partitions}
    before = {name: _sample(name) for name in _COUNTS}
    cells: dict = {}
    outputs, dead = [], 0
    for at in range(0, 12_000, 5_000):
        items = []
        for p, values in partitions.items():
            poll = values[at : at + 5_000]
            if poll:
                items += pipeline.process_poll(
                    [RawBatch("q", p, poll, list(range(at, at + len(poll))))], tables[p]
                )
        dead += sum(isinstance(i, BadEvent) for i in items)
        merged = pipeline.record_cell_batches([i for i in items if isinstance(i, tuple)])
        # what crosses to demarcation leaves the columns it does not use behind
        assert all(not b.event_ids and not len(b.sample) and len(b) for _, b in merged)
        assert {key for key, _ in merged} <= set(keys)  # the flow's routing names
        outputs += pipeline.demarcate_shard(cells, [b for _, b in merged])
    incidents = [o for o in outputs if isinstance(o, CellIncident)]
    assert incidents
    assert incidents[0].state == "open"
    assert {i.cell_id for i in incidents} == {cell}
    assert sum(len(t) for t in tables.values()) == 200  # every subscriber has detector state
    assert dead > 0  # malformed records were dead-lettered on the way
    # every event processed reached the cells (what the bench waits for before it stops a flow)
    processed, demarcated = (_sample(name) - before[name] for name in _COUNTS)
    assert processed == demarcated == 12_000 - dead


_COUNTS = ("cxstream_events_total", "cxstream_cell_events_total")


def _sample(name: str) -> float:
    labels = {"outcome": "processed"} if name == "cxstream_events_total" else {}
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_pipeline_needs_one_state_key_per_shard():
    settings = load_settings()
    with pytest.raises(ConfigError, match=r"2 shard keys for flow\.shards=16"):
        Pipeline(
            settings,
            context=ContextStore(FakeRedis()),
            claims=MemoryClaimStore(),
            shard_keys=["0", "1"],
        )
