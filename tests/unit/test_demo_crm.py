"""The demo's stand-in CRM: outcomes the flow accepts, each customer once a round, drawn from the
simulated world's churn probability."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson

from cxstream.devtools import demo
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.events import CustomerContext, Outcome, OutcomeKind, parse_outcome
from cxstream.settings import Settings


class Captured:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key, value))


def test_the_crm_reports_each_customer_once_a_round_and_hurt_customers_leave_more():
    sim = Simulator(3000, 30, seed=5)
    start = datetime(2020, 1, 1, tzinfo=UTC)  # every incident has started by now
    hurt_cells = sim.cell_ids[:10]
    sim.add_incidents([Incident("cell_outage", c, start, start) for c in hurt_cells])
    settings = Settings()
    first = [p.subscriber_id for p in sim.profiles()]
    crm = demo._Crm(sim, list(sim.profiles()), settings, random.Random(1))
    out = Captured()
    now = crm.next_at
    reports = 0
    while crm.sent < 3000:
        crm.report(out, now)  # type: ignore[arg-type]
        now = crm.next_at
        reports += 1
    assert reports == round(1 / demo.CRM_SHARE)
    topics = settings.kafka.topics
    outcomes = [parse_outcome(value) for topic, _, value in out.sent if topic == topics.outcomes]
    assert all(isinstance(o, Outcome) for o in outcomes)
    assert {topic for topic, _, _ in out.sent} == {topics.outcomes, topics.customers}
    ids = [o.subscriber_id for o in outcomes if isinstance(o, Outcome)]
    assert sorted(ids) == sorted(first)  # each once
    crm.report(out, now)  # the round is over: nothing until the base is scored again
    assert crm.sent == 3000
    crm.report(out, now + settings.churn.score_base_every_s)
    assert crm.sent == 3000 + 3000 * demo.CRM_SHARE

    def churn_rate(group: set[str]) -> float:
        left = [
            o.kind is OutcomeKind.CHURNED
            for o in outcomes
            if isinstance(o, Outcome) and o.subscriber_id in group
        ]
        return sum(left) / len(left)

    hurt = {s for s in first if sim.home_cell[s] in hurt_cells}
    assert churn_rate(hurt) > 2 * churn_rate(set(first) - hurt) > 0.2


def test_a_customer_who_left_leaves_the_network_and_a_newcomer_takes_their_place():
    sim = Simulator(200, 10, seed=3)
    settings = Settings()
    topics = settings.kafka.topics
    first = [p.subscriber_id for p in sim.profiles()]
    t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    busy = first[0]  # their own incident is under way: the CRM reports on them after it
    sim.add_incidents(
        [
            Incident(
                "subscriber_degradation",
                sim.home_cell[busy],
                t,
                t.replace(hour=13),
                subscriber_id=busy,
            )
        ]
    )
    crm = demo._Crm(sim, list(sim.profiles()), settings, random.Random(2))
    crm._rng.random = lambda: 0.0  # everybody reported on leaves
    out = Captured()
    crm.report(out, crm.next_at)  # type: ignore[arg-type]
    left = [
        orjson.loads(v)["subscriber_id"] for topic, _, v in out.sent if topic == topics.outcomes
    ]
    joined = [
        CustomerContext.model_validate_json(v)
        for topic, _, v in out.sent
        if topic == topics.customers
    ]
    assert len(left) == len(joined) == crm.left > 0 and busy not in left
    assert len(sim.subscriber_ids) == 200  # the base keeps its size
    assert not set(left) & set(sim.subscriber_ids)
    assert {c.subscriber_id for c in joined} <= set(sim.subscriber_ids) - set(first)
    assert all(c.tenure_months == 0 and c.consent for c in joined)
    # each in the cell of the one who left: no cell empties out (which would look like a fault)
    assert sorted(sim.home_cell[s] for s in left) == sorted(
        sim.home_cell[c.subscriber_id] for c in joined
    )
    # none of their traffic from then on; the newcomers' instead
    seen = {sim.event(t)["subscriber_id"] for _ in range(20_000)}
    assert not seen & set(left) and {c.subscriber_id for c in joined} <= seen
    assert busy in seen


def test_the_demo_scores_the_base_every_two_minutes_unless_configured(monkeypatch):
    from cxstream.cli.app import settings_from

    assert demo._demo_churn(Settings()).churn.score_base_every_s == 120.0
    monkeypatch.setenv("CXSTREAM_CHURN__SCORE_BASE_EVERY_S", "900")
    configured = settings_from(None)
    assert demo._demo_churn(configured).churn.score_base_every_s == 900.0
