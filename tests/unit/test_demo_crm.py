"""The demo's stand-in CRM: outcomes the flow accepts, each customer once a round, drawn from the
simulated world's churn probability."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from cxstream.devtools import demo
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.events import Outcome, OutcomeKind, parse_outcome
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
    crm = demo._Crm(sim, list(sim.profiles()), settings, random.Random(1))
    out = Captured()
    now = crm.next_at
    reports = 0
    while crm.sent < 3000:
        crm.report(out, now)  # type: ignore[arg-type]
        now = crm.next_at
        reports += 1
    assert reports == round(1 / demo.CRM_SHARE)
    outcomes = [parse_outcome(value) for _, _, value in out.sent]
    assert all(isinstance(o, Outcome) for o in outcomes)
    assert {topic for topic, _, _ in out.sent} == {settings.kafka.topics.outcomes}
    ids = [o.subscriber_id for o in outcomes if isinstance(o, Outcome)]
    assert sorted(ids) == sorted(sim.subscriber_ids)  # each once
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

    hurt = {s for s in sim.subscriber_ids if sim.home_cell[s] in hurt_cells}
    assert churn_rate(hurt) > 2 * churn_rate(set(sim.subscriber_ids) - hurt) > 0.2
