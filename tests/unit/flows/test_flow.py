"""The real Bytewax dataflow with testing sources and sinks and in-memory stores (no sockets)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from cxstream import metrics
from cxstream.actions.policy import Decision, SignalIn
from cxstream.actions.rules import DEFAULT_POLICY, PolicySource
from cxstream.actions.store import MemoryClaimStore
from cxstream.actions.webhook import cloudevent
from cxstream.churn_state import MemoryChurnState
from cxstream.context import ContextStore
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.events import Action, CellIncident, Channel, ConsentStatus
from cxstream.flows.connect import FlowIO
from cxstream.flows.cx import build_flow
from cxstream.pipeline import Pipeline
from cxstream.settings import load_settings
from tests.fakes import FakeRedis
from tests.standards import alarm_errors, message_errors, problem_errors

NOON = datetime(2026, 5, 4, 12, tzinfo=UTC)
NO_HOLDOUT = DEFAULT_POLICY.model_copy(
    update={"holdout": DEFAULT_POLICY.holdout.model_copy(update={"share": 0.0})}
)


def daytime_profiles(sim):
    """Everyone consents everywhere and lives in UTC, so 12:00 is outside quiet hours."""
    granted = {c: ConsentStatus.GRANTED for c in Channel}
    return [p.model_copy(update={"consent": granted, "timezone": "UTC"}) for p in sim.profiles()]


def make_pipeline(settings, context):
    return Pipeline(
        settings,
        context=context,
        claims=MemoryClaimStore(),
        policy=PolicySource(None, default=NO_HOLDOUT),
        clock=lambda: NOON,
    )


def counter(name, *labels):
    return getattr(metrics, name).labels(*labels)._value.get()


def make_messages(sim, start, n, topic="cx.qos"):
    msgs = []
    times = sim.timeline(start, 200, diurnal=False)
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


def on_topic(kafka_out, topic):
    return [orjson.loads(m.value) for m in kafka_out if m.topic == topic]


def short_stream_settings():
    """The defaults, except that an episode ends 2 s after recovery (a minute by default): these
    streams last 20 to 60 s of event time, and their alarms must clear within them."""
    settings = load_settings()
    detector = settings.detector.model_copy(update={"clear_s": 2.0})
    return settings.model_copy(update={"detector": detector})


def test_every_event_ends_processed_or_dead_lettered_and_an_incident_alerts():
    settings = short_stream_settings()
    topics = settings.kafka.topics
    sim = Simulator(20, 2, seed=11, bad_ratio=0.02)
    victim = sim.subscriber_ids[3]
    start = NOON - timedelta(minutes=10)
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
    context.put_many(daytime_profiles(sim))
    pipeline = make_pipeline(settings, context)
    qos = make_messages(sim, start, 4000)

    processed0, dead0 = counter("EVENTS", "processed"), counter("EVENTS", "dead_letter")
    kafka_out, webhooks, _ = run_flow(settings, pipeline, qos)
    processed = counter("EVENTS", "processed") - processed0
    dead = counter("EVENTS", "dead_letter") - dead0

    by_topic = Counter(m.topic for m in kafka_out)
    assert processed + dead == len(qos)
    assert dead == by_topic[topics.dead_letters] > 0
    dead_letters = on_topic(kafka_out, topics.dead_letters)
    reasons = {d["reason"] for d in dead_letters}
    assert reasons <= {"not_json", "missing_field", "bad_type", "out_of_range"}
    assert len(reasons) >= 2
    assert len({d["offset"] for d in dead_letters}) == dead  # each names its own source offset

    alarms = on_topic(kafka_out, topics.alerts)
    # TMF642 alarms on the subscriber's service, cxstream's own record beside; raised, and
    # cleared when the episode ended
    assert [(a["@type"], a["alarmedObjectType"], a["state"]) for a in alarms] == [
        ("Alarm", "Service", "raised"),
        ("Alarm", "Service", "cleared"),
    ]
    assert alarms[1]["id"] == alarms[0]["id"]
    for alarm in alarms:
        for field in ("alarmType", "perceivedSeverity", "probableCause", "alarmedObject",
                      "sourceSystemId", "state", "alarmRaisedTime"):  # fmt: skip
            assert alarm[field]  # TMF642's mandatory fields
    alarms = alarms[:1]
    alerts = [a["x-cxstream"] for a in alarms]
    assert [a["subscriber_id"] for a in alerts] == [victim]
    assert alarms[0]["alarmedObject"]["id"] == victim
    assert alerts[0]["why"]["experience"]["from"] > alerts[0]["why"]["experience"]["to"]
    assert alerts[0]["explained_by"] is None and alarms[0]["isRootCause"] is True
    decisions = on_topic(kafka_out, topics.decisions)
    [decision] = decisions
    assert (decision["subscriber_id"], decision["result"]) == (victim, "sent")
    # the rule follows the customer's value tier (gold and up get a credit, others an apology)
    assert decision["rule"] in ("degradation-apology", "valuable-degradation-credit")
    assert [(a.subscriber_id, a.kind) for a in webhooks] == [(victim, decision["kind"])]
    assert by_topic[topics.actions] == 1
    assert client.mget_calls <= len(qos) / 50 + 1  # one round trip per batch at most


def test_customer_updates_reach_the_store_and_bad_ones_are_dead_lettered():
    settings = load_settings()
    pipeline = make_pipeline(settings, ContextStore(FakeRedis()))
    updates = [
        KafkaSourceMessage(
            b"s1", b'{"subscriber_id": "s1", "language": "de"}', topic="c", offset=0
        ),
        KafkaSourceMessage(
            b"s2", b'{"subscriber_id": "s2", "contract": "forever"}', topic="c", offset=1
        ),
    ]
    kafka_out, _, customer_out = run_flow(settings, pipeline, [], updates)
    assert [u.customer.subscriber_id for u in customer_out] == ["s1"]
    assert customer_out[0].fields == {"language"}  # a patch: only what it carries
    [dead] = [orjson.loads(m.value) for m in kafka_out]
    assert (dead["kind"], dead["reason"], dead["offset"]) == ("customer", "bad_type", 1)


def test_with_an_action_source_the_webhook_delivers_what_the_actions_topic_records():
    """The outbox: deliveries come from the actions topic read back, never straight from the
    decisions, and a record there that is not an action is dead-lettered, not dropped."""
    settings = load_settings()
    pipeline = make_pipeline(settings, ContextStore(FakeRedis()))
    action = Action(
        action_id="inc-c1-1:s1:area_notice",
        subscriber_id="s1",
        kind="area_notice",
        channel=Channel.SMS,
        reason="cell_incident",
        alert_id="inc-c1-1",
        event_time=NOON,
        created_at=NOON,
    )
    recorded = [
        KafkaSourceMessage(b"s1", action.model_dump_json().encode(), topic="a", offset=0),
        KafkaSourceMessage(b"s2", b'{"subscriber_id": "s2"}', topic="a", offset=1),
    ]
    again = action.model_copy(update={"action_id": "decided-not-recorded"})
    signal = SignalIn("cell_incident", "s1", None, 1.0, "inc-c1-1", NOON)
    decided = [Decision(signal, "released", "area_notice", None, again)]
    kafka_out: list = []
    webhooks: list = []
    io = FlowIO(
        qos_source=TestingSource([]),
        kafka_sink=TestingSink(kafka_out),
        webhook_sink=TestingSink(webhooks),
        action_source=TestingSource(recorded),
        deferred_source=TestingSource([decided]),
    )
    run_main(build_flow(settings, pipeline, io))
    assert [a.action_id for a in webhooks] == [action.action_id]
    by_topic = Counter(m.topic for m in kafka_out)
    assert by_topic[settings.kafka.topics.actions] == 1  # the decided one, recorded
    [dead] = on_topic(kafka_out, settings.kafka.topics.dead_letters)
    assert (dead["kind"], dead["reason"], dead["offset"]) == ("action", "missing_field", 1)


def test_a_cell_outage_is_one_incident_with_area_notices_and_no_individual_outreach():
    settings = short_stream_settings()
    topics = settings.kafka.topics
    sim = Simulator(60, 2, seed=12)
    cell = "cell-0001"
    start = NOON - timedelta(minutes=10)
    sim.add_incidents(
        [
            Incident(
                "cell_outage", cell, start + timedelta(seconds=20), start + timedelta(seconds=40)
            )
        ]
    )
    context = ContextStore(FakeRedis())
    context.put_many(daytime_profiles(sim))
    pipeline = make_pipeline(settings, context)
    qos = make_messages(sim, start, 12_000)  # 60 s at 200 events/s

    kafka_out, webhooks, _ = run_flow(settings, pipeline, qos)

    alerts = on_topic(kafka_out, topics.alerts)
    assert all(a.get("@type") == "Alarm" for a in alerts)  # TMF642, individual ones too
    alarms = [a for a in alerts if a["alarmedObjectType"] == "Cell"]  # one per life-cycle change
    raised = [a for a in alarms if a["state"] == "raised"]
    assert [a["alarmedObject"]["id"] for a in raised] == [cell]
    assert {a["state"] for a in alarms} <= {"raised", "updated", "cleared"}
    assert raised[0]["crossedThresholdInformation"]["threshold"]["id"] == "cells.open_share"
    # every record on the alerts topic is a TMF642 Alarm with the mandatory fields
    assert {a["id"]: alarm_errors(a) for a in alerts if alarm_errors(a)} == {}
    in_cell = {s for s in sim.subscriber_ids if sim.home_cell[s] == cell}
    listed = {a["id"] for a in alarms[-1]["affectedService"]}
    assert listed <= in_cell
    assert len(listed) >= 0.3 * len(in_cell)
    individual = [
        a for a in alerts if a["alarmedObjectType"] == "Service" and a["state"] == "raised"
    ]
    assert individual
    # when a subscriber's episode ends its alarm clears, after it was raised
    order = {a["id"]: k for k, a in enumerate(alerts) if a["state"] == "raised"}
    clears = [(k, a) for k, a in enumerate(alerts) if a["state"] == "cleared" and
              a["alarmedObjectType"] == "Service"]  # fmt: skip
    assert clears
    assert all(a["id"] in order and order[a["id"]] < k for k, a in clears)
    assert all(a["alarmClearedTime"] >= a["alarmRaisedTime"] for _, a in clears)
    assert all(
        a["parentAlarm"] == [{"id": raised[0]["id"], "@referredType": "Alarm"}] for a in individual
    )
    assert not any(a["isRootCause"] for a in individual)
    # the same incident as a TMF656 service problem, one per life-cycle change of its alarm
    problems = on_topic(kafka_out, topics.service_problems)
    assert [p["id"] for p in problems] == [a["id"] for a in alarms]
    assert problems[0]["status"] == "acknowledged"
    assert {p["id"]: problem_errors(p) for p in problems if problem_errors(p)} == {}
    assert problems[0]["underlyingAlarm"] == [{"id": raised[0]["id"], "@referredType": "Alarm"}]
    assert problems[-1]["affectedNumberOfServices"] == len(listed)
    assert all(
        {"category", "description", "originatorParty", "priority", "reason"} <= set(p)
        and 1 <= p["priority"] <= 10
        for p in problems
    )  # TMF656 ServiceProblem_Create's required fields
    degradations = [a["x-cxstream"] for a in individual]
    assert all(a["explained_by"] == raised[0]["id"] for a in degradations)
    # one area notice decision per affected customer: sent, or held back by the household cap
    # or an open ticket
    # (one outage does not message every member of a family); no individual outreach at all
    decisions = on_topic(kafka_out, topics.decisions)
    notices = [d for d in decisions if d["signal"] == "cell_incident"]
    assert sorted(d["subscriber_id"] for d in notices) == sorted(listed)
    assert {d["result"] for d in notices} <= {
        "sent",
        "suppressed:household_cap:any:24h",
        "suppressed:ticket_open",
    }
    sent = sorted(d["subscriber_id"] for d in notices if d["result"] == "sent")
    assert sorted(a.subscriber_id for a in webhooks) == sent
    assert len(sent) > 0.5 * len(listed)
    assert {a.kind for a in webhooks} == {"area_notice"}
    # what each webhook carries: a TMF681 CommunicationMessage
    messages = [orjson.loads(cloudevent(a))["data"] for a in webhooks]
    assert {m["id"]: message_errors(m) for m in messages if message_errors(m)} == {}
    explained = [d for d in decisions if d["result"] == "suppressed:explained_by_incident"]
    assert len(explained) == len(degradations)


def test_a_silent_cells_outage_sends_its_area_notice_to_the_subscribers_it_left_in_the_dark():
    settings = short_stream_settings()
    sim = Simulator(60, 2, seed=12)
    dark, neighbour = "cell-0001", "cell-0000"
    start = NOON - timedelta(minutes=10)
    went_dark = start + timedelta(seconds=150)
    sim.add_incidents([Incident("silent_outage", dark, went_dark, went_dark + timedelta(seconds=60),
                                moved_to=neighbour)])  # fmt: skip
    context = ContextStore(FakeRedis())
    context.put_many(daytime_profiles(sim))
    qos = make_messages(sim, start, 44_000)  # 220 s at 200 events/s
    in_dark = {
        orjson.loads(m.value)["subscriber_id"]
        for m in qos
        if orjson.loads(m.value)["cell_id"] == dark
        and went_dark - timedelta(seconds=60) <= datetime.fromisoformat(
            orjson.loads(m.value)["event_time"]) < went_dark
    }  # fmt: skip
    assert len(in_dark) > 20

    kafka_out, webhooks, _ = run_flow(settings, make_pipeline(settings, context), qos)

    alarms = [a for a in on_topic(kafka_out, settings.kafka.topics.alerts)
              if a["alarmedObjectType"] == "Cell"]  # fmt: skip
    [raised] = [a for a in alarms if a["state"] == "raised"]
    assert raised["alarmedObject"]["id"] == dark and raised["x-cxstream"]["cause"] == "outage"
    assert {a["id"] for a in raised["affectedService"]} == in_dark
    assert raised["x-cxstream"]["why"]["moved_to"] == {neighbour: len(in_dark)}
    notices = [d for d in on_topic(kafka_out, settings.kafka.topics.decisions)
               if d["signal"] == "cell_incident"]  # fmt: skip
    assert sorted(d["subscriber_id"] for d in notices) == sorted(in_dark)
    sent = {a.subscriber_id for a in webhooks if a.kind == "area_notice"}
    assert sent == {d["subscriber_id"] for d in notices if d["result"] == "sent"}
    assert len(sent) > 0.5 * len(in_dark)
    # the marketing system is told it is an outage (TMF681's explanation characteristic)
    assert {a.details["cause"] for a in webhooks} == {"outage"}


def churn_trained_state(settings, revision=4):
    """A checkpoint of a model that learned: short month-to-month customers whose experience
    index is below 75 (the index when a degradation is first detected: one bad session against
    a good level) leave."""
    rng = random.Random(5)
    model = Pipeline(settings, context=None, claims=None)._fresh_churn_model()  # type: ignore[arg-type]
    for _ in range(1500):
        contract = rng.choice(["month_to_month", "one_year", "two_year"])
        tenure = rng.randint(0, 72)
        experience = rng.uniform(20, 95)
        risky = contract == "month_to_month" and tenure < 12 and experience < 75
        row = {
            "tenure_months": tenure,
            "monthly_charge": rng.uniform(20, 120),
            "experience_index": experience,
            "degradations_7d": rng.uniform(0, 3),
            "contract": contract,
            "value_tier": rng.choice(["bronze", "silver", "gold"]),
            "signal": "degradation",
        }
        model.learn_one(row, rng.random() < (0.9 if risky else 0.05))
    state = MemoryChurnState()
    state.save_checkpoint(revision, model.to_bytes({"revision": float(revision)}))
    return state


def test_a_risky_customers_degradation_escalates_to_a_retention_offer_with_its_reasons():
    settings = load_settings()
    topics = settings.kafka.topics
    sim = Simulator(20, 2, seed=11)
    victim = sim.subscriber_ids[3]
    start = NOON - timedelta(minutes=10)
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
    profiles = daytime_profiles(sim)
    profiles = [
        p.model_copy(
            update={"contract": "month_to_month", "tenure_months": 2, "monthly_charge": 95.0}
        )
        if p.subscriber_id == victim
        else p
        for p in profiles
    ]
    context = ContextStore(FakeRedis())
    context.put_many(profiles)
    state = churn_trained_state(settings)
    pipeline = Pipeline(
        settings,
        context=context,
        claims=MemoryClaimStore(),
        policy=PolicySource(None, default=NO_HOLDOUT),
        churn=state,
        clock=lambda: NOON,
    )
    kafka_out, webhooks, _ = run_flow(settings, pipeline, make_messages(sim, start, 4000))

    [decision] = on_topic(kafka_out, topics.decisions)
    assert (decision["signal"], decision["result"]) == ("churn_risk", "sent")
    assert decision["rule"] == "churn-risk-retention"
    [action] = webhooks
    assert (action.subscriber_id, action.kind) == (victim, "retention_offer")
    churn = action.details["churn"]
    assert churn["risk"] >= settings.churn.escalate_risk
    assert churn["model_revision"] == 4
    top = {f["feature"]: f["contribution"] for f in churn["top_features"]}
    assert top["contract"] > 0 and top["tenure_months"] > 0  # why: pushed the risk up
    assert action.offer is not None
    snapshot = state.snapshots[victim]
    assert snapshot["features"]["contract"] == "month_to_month"
    assert snapshot["risk"] == pytest.approx(churn["risk"], abs=1e-4)

    # weeks later the outcomes arrive: learned from the snapshot, not from today's context
    outcomes = [
        KafkaSourceMessage(
            k.encode(),
            orjson.dumps({"subscriber_id": k, "kind": kind, "time": NOON.isoformat()}),
            topic="cx.outcomes",
            offset=i,
        )
        for i, (k, kind) in enumerate(
            [(victim, "churned"), ("never-scored", "churned"), (victim, "complaint")]
        )
    ]
    kafka_out2: list = []
    io = FlowIO(
        qos_source=TestingSource([]),
        kafka_sink=TestingSink(kafka_out2),
        outcome_source=TestingSource(outcomes),
    )
    run_main(build_flow(settings, pipeline, io))
    records = [
        r["churn_outcome"] for r in on_topic(kafka_out2, topics.decisions) if "churn_outcome" in r
    ]
    assert [(r["subscriber_id"], r["result"]) for r in records] == [
        (victim, "learned"),
        ("never-scored", "no_snapshot"),
        (victim, "not_a_label"),
    ]
    assert records[0]["revision"] == 5  # the restored revision 4, plus one
    assert state.revision() == 5
    assert victim not in state.snapshots  # learned once


def test_an_area_notice_counts_from_the_update_that_caught_the_customer():
    """A customer caught by an incident's later update: their notice's event time is that
    update's, not the incident's opening (which may be long before they were affected)."""
    sim = Simulator(20, 2, seed=3)
    context = ContextStore(FakeRedis(), prefix="t")
    profiles = daytime_profiles(sim)
    context.put_many(profiles)
    pipeline = make_pipeline(load_settings(), context)
    sid = profiles[0].subscriber_id
    opened, caught = NOON - timedelta(seconds=40), NOON - timedelta(seconds=1)
    update = CellIncident(
        incident_id="inc-c1-1",
        cell_id="c1",
        state="updated",
        severity="major",
        opened_at=opened,
        updated_at=caught,
        affected=[],
        new_affected=[sid],
        active_subscribers=10,
        share=0.5,
        experience=30.0,
    )
    decisions = pipeline.decide_batch([update])
    sent = [d.action for d in decisions if d.action is not None]
    assert len(sent) == 1
    assert sent[0].kind == "area_notice"
    assert sent[0].event_time == caught
