from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cxstream.devtools.simulate import (
    Incident,
    Simulator,
    churn_probability,
    diurnal_factor,
    load_factor,
    plan_incidents,
)
from cxstream.events import BadEvent, QosEvent, parse_qos

T0 = datetime(2026, 6, 1, 18, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_same_seed_same_stream():
    a, b = Simulator(50, 5, seed=9), Simulator(50, 5, seed=9)
    assert [a.event(T0) for _ in range(20)] == [b.event(T0) for _ in range(20)]


def test_every_generated_event_validates():
    sim = Simulator(100, 10, seed=2)
    sim.add_incidents(plan_incidents(sim, T0, 60, sim.rng))
    times = sim.timeline(T0, 500)
    for _ in range(3000):
        _, value = sim.encoded(next(times))
        assert isinstance(parse_qos(value), QosEvent)


def test_bad_ratio_produces_dead_letters_of_several_kinds():
    sim = Simulator(10, 2, seed=3, bad_ratio=0.5)
    reasons = set()
    for i in range(400):
        key, value = sim.encoded(T0 + timedelta(seconds=i))
        result = parse_qos(value)
        if isinstance(result, BadEvent):
            reasons.add(result.reason)
            assert key is None
    assert reasons == {"not_json", "missing_field", "bad_type", "out_of_range"}


def test_cell_outage_degrades_only_its_cell_and_only_while_it_lasts():
    sim = Simulator(200, 4, seed=4)
    inside = [s for s in sim.subscriber_ids if sim.home_cell[s] == "cell-0001"]
    outside = [s for s in sim.subscriber_ids if sim.home_cell[s] != "cell-0001"]
    sim.add_incidents([Incident("cell_outage", "cell-0001", T0, T0 + timedelta(minutes=5))])
    during = T0 + timedelta(minutes=1)
    assert min(sim.event(during, s)["loss_pct"] for s in inside) > 5
    assert max(sim.event(during, s)["loss_pct"] for s in outside) < 3
    assert max(sim.event(T0 + timedelta(minutes=6), s)["loss_pct"] for s in inside) < 3


def test_flapping_switches_on_and_off():
    inc = Incident("flapping", "c", T0, T0 + timedelta(seconds=100), period_s=10)
    pattern = [inc.impairment(T0 + timedelta(seconds=s)) for s in (1, 6, 11, 16, 120)]
    assert pattern == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_diurnal_curve_and_rate():
    assert diurnal_factor(T0.replace(hour=4)) < 0.3 < 0.9 < diurnal_factor(T0.replace(hour=20))
    sim = Simulator(10, 2, seed=5)
    times = sim.timeline(T0.replace(hour=20), 1000)
    ts = [next(times) for _ in range(5001)]
    rate = 5000 / (ts[-1] - ts[0]).total_seconds()
    assert 900 < rate < 1100


def test_plan_incidents_has_one_of_each_kind_with_baseline_first():
    sim = Simulator(100, 10, seed=6)
    incidents = plan_incidents(sim, T0, 100, sim.rng)
    assert {i.kind for i in incidents} == {
        "cell_outage",
        "subscriber_degradation",
        "flapping",
        "gradual",
        "kpi_shift",
        "silent_outage",
    }
    assert all(i.start >= T0 + timedelta(seconds=20) for i in incidents)
    cells = [i.cell_id for i in incidents]
    assert len(set(cells)) == len(cells)  # each in its own cell
    [dark] = [i for i in incidents if i.kind == "silent_outage"]
    assert dark.moved_to not in cells
    truth = incidents[0].to_json()
    assert b'"kind"' in truth and b'"start"' in truth
    # with few cells, fewer kinds: never two incidents in one cell
    small = Simulator(30, 3, seed=6)
    few = plan_incidents(small, T0, 100, small.rng)
    assert len({i.cell_id for i in few}) == len(few) == 2


def test_a_plan_avoids_the_cells_it_is_told_to_while_enough_others_remain():
    sim = Simulator(200, 12, seed=6)
    busy = sim.cell_ids[:5]
    for _ in range(20):
        planned = plan_incidents(sim, T0, 100, sim.rng, avoid=busy)
        assert not {i.cell_id for i in planned} & set(busy)  # the victim's home cell too
    # too few others left: it picks among all cells rather than plan fewer incidents
    crowded = plan_incidents(sim, T0, 100, sim.rng, avoid=sim.cell_ids[:8])
    assert len({i.cell_id for i in crowded}) == len(crowded) == 6
    # nothing to avoid: the same plan as before the parameter, so evaluations do not move
    a, b = Simulator(200, 12, seed=3), Simulator(200, 12, seed=3)
    assert plan_incidents(a, T0, 100, a.rng) == plan_incidents(b, T0, 100, b.rng, avoid=())


def test_a_silent_cell_reports_nothing_and_its_subscribers_appear_next_door():
    sim = Simulator(200, 8, seed=7)
    planned = plan_incidents(sim, T0, 1000, sim.rng)
    sim.add_incidents(planned)
    [dark] = [i for i in planned if i.kind == "silent_outage"]
    during = [sim.event(dark.start + timedelta(seconds=1)) for _ in range(2000)]
    assert dark.cell_id not in {e["cell_id"] for e in during}
    after = [sim.event(dark.end + timedelta(seconds=1)) for _ in range(2000)]
    assert dark.cell_id in {e["cell_id"] for e in after}


def test_a_gradual_degradation_ramps_up():
    sim = Simulator(100, 10, seed=6)
    [ramp] = [i for i in plan_incidents(sim, T0, 3000, sim.rng) if i.kind == "gradual"]
    assert ramp.ramp_s == 1800
    levels = [ramp.impairment(ramp.start + timedelta(seconds=s)) for s in (0, 900, 1800, 2000)]
    assert levels == [0.0, ramp.severity / 2, ramp.severity, ramp.severity]


def test_flat_timeline_keeps_the_busy_hour_rate_at_night():
    sim = Simulator(10, 2, seed=5)
    times = sim.timeline(T0.replace(hour=4), 1000, diurnal=False)
    ts = [next(times) for _ in range(5001)]
    rate = 5000 / (ts[-1] - ts[0]).total_seconds()
    assert 900 < rate < 1100


def test_a_floor_lifts_the_night_and_keeps_the_busy_hour():
    sim = Simulator(10, 2, seed=5)
    for hour, low, high in ((4, 540, 640), (20, 900, 1100)):
        times = sim.timeline(T0.replace(hour=hour), 1000, floor=0.5)
        ts = [next(times) for _ in range(5001)]
        assert low < 5000 / (ts[-1] - ts[0]).total_seconds() < high
    assert load_factor(T0.replace(hour=4), 0.5) > 0.5 > load_factor(T0.replace(hour=4))
    with pytest.raises(ValueError, match="floor"):
        load_factor(T0, 1.5)


def test_customers_the_network_hurt_leave_more_often_and_contract_and_tenure_weigh_most():
    sim = Simulator(2000, 20, seed=4)
    victim = sim.subscriber_ids[0]
    cell = sim.home_cell[sim.subscriber_ids[1]]
    sim.add_incidents(
        [
            Incident("subscriber_degradation", sim.home_cell[victim], T0, T0 + HOUR, victim),
            Incident("cell_outage", cell, T0 + HOUR, T0 + 2 * HOUR),
            Incident("kpi_shift", cell, T0, T0 + HOUR, severity=0.1),  # too mild to hurt
        ]
    )

    def hurt_by(t: datetime) -> set[str]:
        return {s for s in sim.subscriber_ids if sim.hurt(s, t)}

    assert hurt_by(T0 - HOUR) == set()
    assert hurt_by(T0) == {victim}
    in_cell = {s for s in sim.subscriber_ids if sim.home_cell[s] == cell}
    assert hurt_by(T0 + HOUR) == {victim} | in_cell

    profiles = list(sim.profiles())
    calm = sum(churn_probability(p, hurt=False) for p in profiles) / len(profiles)
    hurt = sum(churn_probability(p, hurt=True) for p in profiles) / len(profiles)
    assert 0.1 < calm < 0.2 and hurt > 2 * calm
    by_contract = {
        c: [churn_probability(p, hurt=False) for p in profiles if p.contract == c]
        for c in ("month_to_month", "one_year", "two_year")
    }
    means = [sum(v) / len(v) for v in by_contract.values()]
    assert means == sorted(means, reverse=True)
    new = [churn_probability(p, hurt=False) for p in profiles if p.tenure_months < 12]
    old = [churn_probability(p, hurt=False) for p in profiles if p.tenure_months >= 48]
    assert sum(new) / len(new) > 2 * sum(old) / len(old)
