from __future__ import annotations

from collections import Counter
from datetime import timedelta

import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from cxstream import metrics
from cxstream.actions.store import MemoryClaimStore
from cxstream.context import ContextStore
from cxstream.events import Channel, ConsentStatus, utcnow
from cxstream.flows.cx import FlowIO, build_flow
from cxstream.pipeline import Pipeline
from cxstream.settings import load_settings
from cxstream.simulate import Incident, Simulator
from tests.fakes import FakeRedis


def counter(name, *labels):
    return getattr(metrics, name).labels(*labels)._value.get()


def make_messages(sim, start, n, topic="cx.qos"):
    msgs = []
    times = sim.timeline(start, 200)
    for offset in range(n):
        key, value = sim.encoded(next(times))
        msgs.append(KafkaSourceMessage(key, value, topic=topic, partition=0, offset=offset))
    return msgs


def run_flow(settings, pipeline, qos, customers=()):
    kafka_out, webhooks, customer_out = [], [], []
    io = FlowIO(
        qos_source=TestingSource(qos, batch_size=50),
        kafka_sink=TestingSink(kafka_out),
        customer_source=TestingSource(list(customers)),
        customer_sink=TestingSink(customer_out),
        webhook_sink=TestingSink(webhooks),
    )
    run_main(build_flow(settings, pipeline, io))
    return kafka_out, webhooks, customer_out


def test_every_event_ends_processed_or_dead_lettered_and_an_incident_alerts():
    settings = load_settings()
    sim = Simulator(20, 2, seed=11, bad_ratio=0.02)
    victim = sim.subscriber_ids[3]
    start = utcnow() - timedelta(minutes=10)
    sim.add_incidents(
        [
            Incident(
                "subscriber_degradation",
                sim.home_cell[victim],
                start + timedelta(seconds=8),
                start + timedelta(seconds=16),
                victim,
            )
        ]
    )
    client = FakeRedis()
    context = ContextStore(client)
    profiles = list(sim.profiles())
    granted = {c: ConsentStatus.GRANTED for c in Channel}
    context.put_many([p.model_copy(update={"consent": granted}) for p in profiles])
    pipeline = Pipeline(settings, context=context, claims=MemoryClaimStore())
    qos = make_messages(sim, start, 4000)

    processed0, dead0 = counter("EVENTS", "processed"), counter("EVENTS", "dead_letter")
    kafka_out, webhooks, _ = run_flow(settings, pipeline, qos)
    processed = counter("EVENTS", "processed") - processed0
    dead = counter("EVENTS", "dead_letter") - dead0

    by_topic = Counter(m.topic for m in kafka_out)
    assert processed + dead == len(qos)
    assert dead == by_topic[settings.kafka.topics.dead_letters] > 0
    reasons = {
        orjson.loads(m.value)["reason"]
        for m in kafka_out
        if m.topic == settings.kafka.topics.dead_letters
    }
    assert reasons <= {"not_json", "missing_field", "bad_type", "out_of_range"}
    assert len(reasons) >= 2
    dead_offsets = {
        orjson.loads(m.value)["offset"]
        for m in kafka_out
        if m.topic == settings.kafka.topics.dead_letters
    }
    assert len(dead_offsets) == dead  # each dead letter names its own source offset

    alerts = [orjson.loads(m.value) for m in kafka_out if m.topic == settings.kafka.topics.alerts]
    assert [a["subscriber_id"] for a in alerts] == [victim]
    assert alerts[0]["why"]["experience"]["from"] > alerts[0]["why"]["experience"]["to"]
    assert [a.subscriber_id for a in webhooks] == [victim]
    assert by_topic[settings.kafka.topics.actions] == 1
    assert client.mget_calls <= len(qos) / 50 + 1  # one round trip per batch at most


def test_customer_updates_reach_the_store_and_bad_ones_are_dead_lettered():
    settings = load_settings()
    client = FakeRedis()
    pipeline = Pipeline(settings, context=ContextStore(client), claims=MemoryClaimStore())
    updates = [
        KafkaSourceMessage(
            b"s1", b'{"subscriber_id": "s1", "language": "de"}', topic="c", offset=0
        ),
        KafkaSourceMessage(
            b"s2", b'{"subscriber_id": "s2", "contract": "forever"}', topic="c", offset=1
        ),
    ]
    kafka_out, _, customer_out = run_flow(settings, pipeline, [], updates)
    assert [c.subscriber_id for c in customer_out] == ["s1"]
    [dead] = [orjson.loads(m.value) for m in kafka_out]
    assert (dead["kind"], dead["reason"], dead["offset"]) == ("customer", "bad_type", 1)


def test_a_cell_outage_is_one_incident_and_its_subscribers_get_no_individual_outreach():
    settings = load_settings()
    sim = Simulator(60, 2, seed=12)
    cell = "cell-0001"
    start = utcnow() - timedelta(minutes=10)
    sim.add_incidents(
        [
            Incident(
                "cell_outage", cell, start + timedelta(seconds=20), start + timedelta(seconds=40)
            )
        ]
    )
    context = ContextStore(FakeRedis())
    granted = {c: ConsentStatus.GRANTED for c in Channel}
    context.put_many([p.model_copy(update={"consent": granted}) for p in sim.profiles()])
    pipeline = Pipeline(settings, context=context, claims=MemoryClaimStore())
    qos = make_messages(sim, start, 12_000)  # 60 s at 200 events/s

    kafka_out, webhooks, _ = run_flow(settings, pipeline, qos)

    alerts = [orjson.loads(m.value) for m in kafka_out if m.topic == settings.kafka.topics.alerts]
    incidents = [a for a in alerts if a["kind"] == "cell_incident"]
    opened = [i for i in incidents if i["state"] == "open"]
    assert [i["cell_id"] for i in opened] == [cell]
    assert {i["state"] for i in incidents} <= {"open", "updated", "resolved"}
    in_cell = {s for s in sim.subscriber_ids if sim.home_cell[s] == cell}
    listed = {a["subscriber_id"] for a in opened[0]["affected"]}
    assert listed <= in_cell
    assert len(listed) >= 0.3 * len(in_cell)
    degradations = [a for a in alerts if a["kind"] == "degradation"]
    assert degradations
    assert all(a["explained_by"] == opened[0]["incident_id"] for a in degradations)
    assert webhooks == []  # explained degradations cause no individual outreach
