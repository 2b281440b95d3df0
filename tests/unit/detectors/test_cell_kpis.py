"""Cell KPI series: a cell whose KPIs leave their normal is seen, even when no subscriber is."""

from __future__ import annotations

import copy
import math
import pickle
import random
import zoneinfo
from datetime import UTC, datetime

import pytest

from cxstream.detectors.cell_kpis import CellKpis, KpiSettings, median
from cxstream.detectors.cells import CellMonitor, CellSettings

SUBS = [f"s{i}" for i in range(20)]
T0 = 1_780_000_000.0  # a Tuesday afternoon, on the 10-second grid


def run(
    cell, start, end, *, experience=90.0, loss=0.2, bad=(), silent=False, rng=None, alerts=(),
    subs=SUBS,
):  # fmt: skip
    """Every subscriber reports about every 2 s of [start, end); returns (updates, released)."""
    rng = rng or random.Random(0)
    updates, released = [], []
    t = start
    while t < end:
        if silent:
            u, r = cell.tick(t)
        else:
            sid = rng.choice(subs)
            worse = sid in bad
            u, r = cell.observe(
                t,
                sid,
                degraded=worse,
                experience=(30.0 if worse else experience) + rng.gauss(0, 3),
                loss=(8.0 if worse else loss) + abs(rng.gauss(0, 0.1)),
                throughput=20_000.0 + rng.gauss(0, 2_000),
                alert=f"alert-{sid}-{t:.1f}" if sid in alerts else None,
            )
        updates += u
        released += r
        t += 0.1
    return updates, released


def opened(updates):
    return [u for u in updates if u.state == "open"]


def test_a_mild_shift_of_the_whole_cell_opens_a_kpi_incident_although_nobody_degrades():
    cell = CellMonitor("c1")
    rng = random.Random(1)
    assert opened(run(cell, T0, T0 + 900, rng=rng)[0]) == []  # 15 minutes of normal
    # every subscriber 12 points worse: far from anyone's own threshold, clear in the median
    updates, _ = run(cell, T0 + 900, T0 + 1000, experience=78.0, rng=rng)
    [incident] = opened(updates)
    assert incident.cause == "kpi_anomaly"
    assert incident.affected == {}
    assert "experience" in {k.kpi for k in incident.kpis}
    assert T0 + 900 <= incident.at <= T0 + 960  # confirmed within a minute


def test_one_subscriber_in_trouble_does_not_move_the_cell_kpis():
    cell = CellMonitor("c1")
    rng = random.Random(2)
    run(cell, T0, T0 + 900, rng=rng)
    updates, _ = run(cell, T0 + 900, T0 + 1500, bad={"s3"}, rng=rng)
    assert opened(updates) == []
    assert cell.kpis.anomalies == []


def test_a_cell_gone_silent_opens_an_outage_from_the_shard_clock():
    cell = CellMonitor("c1")
    rng = random.Random(3)
    run(cell, T0, T0 + 900, rng=rng)
    updates, _ = run(cell, T0 + 900, T0 + 1000, silent=True)
    [incident] = opened(updates)
    assert incident.cause == "outage"
    assert {"volume", "active"} <= {k.kpi for k in incident.kpis}
    assert incident.at - (T0 + 900) <= 60
    # it stays open while the cell is silent, and resolves once its traffic is back to normal
    updates, _ = run(cell, T0 + 1000, T0 + 1500, silent=True)
    assert [u.state for u in updates if u.state == "resolved"] == []
    updates, _ = run(cell, T0 + 1500, T0 + 1800, rng=rng)
    assert [u.state for u in updates][-1] == "resolved"


def test_a_cell_gone_silent_in_its_first_minutes_is_an_outage_before_the_detector_scores():
    # 2 minutes of traffic (100 events an interval) are 12 intervals: the series detector
    # scores from its 30th point, the Poisson chance of three empty intervals is e^-300
    cell = CellMonitor("c1")
    run(cell, T0, T0 + 120, rng=random.Random(4))
    assert not next(k for k in cell.kpis._kpis if k.name == "volume").detector.scoring
    updates, _ = run(cell, T0 + 120, T0 + 200, silent=True)
    [incident] = opened(updates)
    assert incident.cause == "outage"
    assert "volume" in {k.kpi for k in incident.kpis}
    assert incident.at - (T0 + 120) <= 40  # the empty interval and its two confirmations


@pytest.mark.parametrize("per_interval", [0.5, 2.0])
def test_a_quiet_cell_falling_silent_early_is_left_to_the_detector(per_interval):
    # with a median of 2 events an interval, three empty ones have a Poisson chance of e^-6
    kpis = CellKpis()
    rng = random.Random(5)
    for i in range(15):
        volume = float(sum(rng.random() < per_interval / 20 for _ in range(20)))
        kpis.close(T0 + 10 * i, {"volume": volume, "active": min(volume, 3.0)})
    found = [kpis.close(T0 + 10 * i, {"volume": 0.0, "active": 0.0}) for i in range(15, 20)]
    assert found == [[]] * 5


def test_once_the_detector_scores_a_silence_is_its_call():
    # a detector that has learnt this cell's nightly silence (a capacity cell switched off to
    # save energy) finds nothing new in it: the baseline's Poisson reading must not overrule it
    class Learnt:
        scoring = True

        def update_novel(self, value, t):
            return 0.0, False

    kpis = CellKpis()
    busy = {"volume": 100.0, "active": 20.0}
    for i in range(40):
        kpis.close(T0 + 10 * i, busy)
    next(k for k in kpis._kpis if k.name == "volume").detector = Learnt()
    # (the active subscribers as usual: only the volume's rule is under test)
    found = [kpis.close(T0 + 10 * i, {"volume": 0.0, "active": 20.0}) for i in range(40, 45)]
    assert found == [[]] * 5


def test_one_empty_interval_early_on_is_not_an_outage():
    kpis = CellKpis()
    busy = {"volume": 100.0, "active": 20.0}
    for i in range(12):
        kpis.close(T0 + 10 * i, busy)
    assert kpis.close(T0 + 120, {"volume": 0.0, "active": 0.0}) == []
    assert [kpis.close(T0 + 10 * i, busy) for i in range(13, 20)] == [[]] * 7
    assert kpis.anomalies == []


def test_a_silent_cells_outage_names_the_cells_its_subscribers_went_to():
    cell = CellMonitor("c1")
    run(cell, T0, T0 + 900, rng=random.Random(3))
    for k, sid in enumerate(SUBS[:12]):  # they turn up next door as the cell goes dark
        cell.departed(T0 + 901 + k, "c2" if k < 9 else "c3", sid)
    cell.departed(T0 + 902, "c2", SUBS[0])  # the same subscriber twice counts once
    cell.departed(T0 + 100, "c9", "s19")  # long before: not this outage's
    updates, _ = run(cell, T0 + 900, T0 + 1000, silent=True)
    [incident] = opened(updates)
    assert incident.cause == "outage"
    assert incident.moved_to == {"c2": 9, "c3": 3}
    pickle.loads(pickle.dumps(cell))
    # the subscribers' ids are not kept longer than they can serve
    run(cell, T0 + 1000, T0 + 1700, silent=True)
    assert cell.moved_to(0.0) == {}


def test_a_silent_cells_outage_names_the_subscribers_it_left_in_the_dark():
    cell = CellMonitor("c1")
    rng = random.Random(6)
    run(cell, T0, T0 + 500, rng=rng)
    cell.observe(T0 + 500, "visitor", degraded=False, experience=90.0)  # long before the silence
    run(cell, T0 + 500.05, T0 + 890, rng=rng)
    run(cell, T0 + 890, T0 + 900, rng=rng, subs=SUBS[:18])
    cell.departed(T0 + 891, "c2", "s18")  # two turned up next door before the cell went dark
    cell.departed(T0 + 892, "c2", "s19")
    cell.departed(T0 + 905, "c2", "s0")  # and one after: the outage reached them
    updates, _ = run(cell, T0 + 900, T0 + 1000, silent=True)
    [incident] = opened(updates)
    assert incident.cause == "outage"
    assert set(incident.affected) == set(incident.new_affected) == set(SUBS[:18])
    # once its traffic is back, the subscribers of its last window who did not return go
    assert "s17" in cell._subs
    back = copy.deepcopy(cell)
    run(back, T0 + 1000, T0 + 1100, rng=rng, subs=SUBS[:15])
    assert set(back._subs) == set(SUBS[:15])
    # and while it stays silent, they are kept no longer than they can serve (ten minutes)
    run(cell, T0 + 1000, T0 + 1490, silent=True)
    assert "s17" in cell._subs
    run(cell, T0 + 1490, T0 + 1530, silent=True)
    assert cell._subs == {}


def test_a_short_silence_confirmed_as_its_traffic_comes_back_names_those_it_left_in_the_dark():
    # the intervals it left empty close on the first event after it, and the outage opens
    # then: named by the last event before the silence, not by that first one
    cell = CellMonitor("c1")
    rng = random.Random(9)
    run(cell, T0, T0 + 900, rng=rng)
    for k, sid in enumerate(SUBS[:12]):  # they turn up next door meanwhile
        cell.departed(T0 + 905 + k, "c2", sid)
    quiet, _ = run(cell, T0 + 900, T0 + 939, silent=True)
    assert opened(quiet) == []  # not yet confirmed on the shard's clock
    updates, _ = run(cell, T0 + 942, T0 + 950, rng=rng, subs=SUBS[:3])
    [incident] = opened(updates)
    assert incident.cause == "outage"
    assert set(incident.affected) == set(SUBS)


def test_a_cell_whose_traffic_falls_by_half_without_going_silent_names_nobody_in_the_dark():
    # 12 of its 20 subscribers stop: an outage by its volume, but the 8 still served are not
    # in the dark, and nothing tells which of the others are
    cell = CellMonitor("c1")
    rng = random.Random(11)
    run(cell, T0, T0 + 900, rng=rng)
    updates, _ = run(cell, T0 + 900, T0 + 1000, rng=rng, subs=SUBS[:8])
    [incident] = opened(updates)
    assert incident.cause == "outage" and incident.affected == {}


def test_an_incident_that_turns_into_an_outage_names_the_subscribers_in_the_dark():
    cell = CellMonitor("c1")
    rng = random.Random(7)
    run(cell, T0, T0 + 900, rng=rng)
    bad = set(SUBS[:8])  # 8 of 20 degrade: an incident for them, then the cell goes dark
    before, _ = run(cell, T0 + 900, T0 + 960, rng=rng, bad=bad)
    [incident] = opened(before)
    assert incident.cause == "degraded_share" and set(before[-1].affected) <= bad
    updates, _ = run(cell, T0 + 960, T0 + 1060, silent=True)
    outage = next(u for u in updates if u.cause == "outage")
    assert outage.incident_id == incident.incident_id and outage.state == "updated"
    assert set(outage.affected) == set(SUBS)
    assert set(outage.new_affected) == set(SUBS) - set(before[-1].affected)


def test_one_interval_far_out_makes_no_drift():
    """A quiet interval's median of a few subscribers can fall far below the usual level: as a CUSUM increment it would pass the decision level alone. After an interval
    within the allowance it counts at most persist_z deviations, so it opens nothing (the
    detector's score asks for confirmation too); a lasting shift still does."""
    kpis = CellKpis(KpiSettings(interval_s=10))
    rng = random.Random(3)
    t = T0
    found = []
    for i in range(400):
        t += 10.0
        # 8 points down: 16 deviations of the reference, within the score rule's 3 robust
        # deviations (at least 5 % of the level each)
        value = {299: 98.0, 300: 90.0}.get(i, 98.0 + rng.gauss(0, 0.5))
        found += kpis.close(t, {"experience": value})
    assert found == []
    for _ in range(12):
        t += 10.0
        found += kpis.close(t, {"experience": 94.0 + rng.gauss(0, 0.5)})
    assert [a.kpi for a in found] == ["experience"]


def _shifted(settings: KpiSettings):
    """A cell's experience KPI 50 minutes at 98, then 10 intervals shifted to 90: the KPIs,
    the time of the last interval and the anomalies the shift opened."""
    kpis = CellKpis(settings)
    rng = random.Random(5)
    t = T0
    for _ in range(300):
        t += 10.0
        kpis.close(t, {"experience": 98.0 + rng.gauss(0, 0.5)})
    found = []
    for _ in range(10):
        t += 10.0
        found += kpis.close(t, {"experience": 90.0 + rng.gauss(0, 0.5)})
    return kpis, t, found


def test_an_anomaly_ends_only_after_confirm_plus_one_intervals_back_inside_its_limit():
    """A mild shift's median crosses back inside its limit now and then; ended by one such
    interval, the episode's incident closed while the shift went on (and the detector, having
    learned the new level by then, opened nothing again)."""
    settings = KpiSettings(interval_s=10)
    kpis, t, found = _shifted(settings)
    assert [a.kpi for a in found] == ["experience"] and kpis.anomalies
    since = kpis.anomalies[0].since

    def back_inside(n: int) -> None:  # n intervals at the old level, then the shift again
        nonlocal t
        for _ in range(n):
            t += 10.0
            kpis.close(t, {"experience": 98.0})
            assert kpis.anomalies and kpis.anomalies[0].since == since  # the same episode
        t += 10.0
        kpis.close(t, {"experience": 90.0})

    for n in range(1, settings.confirm + 1):  # back for 1, then 2 (confirm) intervals
        back_inside(n)
    assert [a.since for a in kpis.anomalies] == [since]
    for _ in range(settings.confirm + 1):  # back for confirm + 1 in a row: it is over
        t += 10.0
        kpis.close(t, {"experience": 98.0})
    assert kpis.anomalies == []


def test_an_anomaly_holding_short_of_half_way_back_to_its_baseline_goes_on():
    """Back inside its opening limit is not back: a mild shift whose KPI hovers about that
    limit stays one episode until the KPI comes back past half-way to its baseline."""
    settings = KpiSettings(interval_s=10)
    kpis, t, _ = _shifted(settings)
    (anomaly,) = kpis.anomalies
    (limit,) = [k.limit for k in kpis._kpis if k.name == "experience"]
    hovering = limit + 0.25 * (anomaly.baseline - limit)  # inside the limit, short of half-way
    for _ in range(20):
        t += 10.0
        kpis.close(t, {"experience": hovering})
        assert [a.since for a in kpis.anomalies] == [anomaly.since]
    for _ in range(settings.confirm + 1):
        t += 10.0
        kpis.close(t, {"experience": anomaly.baseline})
    assert kpis.anomalies == []


def test_an_interval_of_fewer_than_min_affected_subscribers_has_no_quality_kpis():
    """At a quiet moment a cell that usually has several subscribers an interval sees one: the
    median is that subscriber's own bad minute, not the cell's quality. Two such intervals in a
    row would be a drift (the second, after one beyond the allowance, counts in full); they have
    no quality KPIs, so nothing opens."""
    cell = CellMonitor("c1")
    rng = random.Random(5)
    run(cell, T0, T0 + 900, rng=rng)
    assert cell.kpis.usual_active >= cell.settings.min_affected
    updates = []
    # 20 s of one subscriber 10 points below the cell's usual experience: within the score
    # rule's limit (3 robust deviations of at least 5 % of the level), 13 of the drift's
    for k in range(200):
        u, _ = cell.observe(
            T0 + 900 + 0.1 * k, "s1", degraded=False, experience=80.0, loss=0.2,
            throughput=20_000.0,
        )  # fmt: skip
        updates += u
    updates += run(cell, T0 + 920, T0 + 1100, rng=rng)[0]
    assert opened(updates) == [] and cell.kpis.anomalies == []


def test_a_slow_ramp_is_found_by_the_drift_statistic():
    cell = CellMonitor("c1")
    rng = random.Random(4)
    run(cell, T0, T0 + 900, rng=rng)
    found = []
    for minute in range(30):  # 90 -> 60 over 30 minutes: a point a minute, never a jump
        at = T0 + 900 + 60 * minute
        updates, _ = run(cell, at, at + 60, experience=90.0 - minute, rng=rng)
        found += opened(updates)
    [incident] = found
    assert incident.cause == "kpi_anomaly"
    assert incident.at < T0 + 900 + 20 * 60  # long before the ramp is done


def load_at(hour):
    """The day's load: busy at 9:00 (1) and at 18:00 (0.67), quiet at night."""
    return math.exp(-((hour - 9) ** 2) / 1.7) + 0.67 * math.exp(-((hour - 18) ** 2) / 4)


def loss_at(hour, rng, extra=0.0):
    """Loss that rises with the load twice a day: by 2 points at 9:00 (ten times its noise) and
    by 1.3 at 18:00, plus ``extra``."""
    return max(0.0, 0.3 + 2.0 * load_at(hour) + extra + rng.gauss(0, 0.2))


def busy_hour_loss(kpis, days, rng, *, degraded_at=None, volume=False):
    """:func:`loss_at`, one 10-second interval at a time; from ``degraded_at`` (epoch seconds) it
    ramps 1 point higher over 30 minutes. With ``volume``, the cell's events follow the load too
    (100 an interval at night, 300 at 9:00, Poisson-like noise). Returns the times of the
    anomalies, per day."""
    midnight = T0 - T0 % 86_400
    found: dict[int, list[float]] = {day: [] for day in range(days)}
    for i in range(days * 8_640):
        t = midnight + 10.0 * (i + 1)
        extra = (
            0.0 if degraded_at is None or t < degraded_at else min(1.0, (t - degraded_at) / 1_800)
        )
        hour = t % 86_400 / 3_600
        values = {"loss_pct": loss_at(hour, rng, extra)}
        if volume:
            events = 100.0 + 200.0 * load_at(hour)
            values["volume"] = max(0.0, round(events + rng.gauss(0, math.sqrt(events))))
        found[i // 8_640] += [t for _ in kpis.close(t, values)]
    return found


def test_a_kpi_that_rises_at_a_time_of_day_each_day_drifts_only_on_the_first():
    """The drift statistic's reference is a half-hour mean, so a daily rise looks like a drift:
    where the cell's load does not rise with it (no volume here), it opens anomalies on the
    first day (8 here), before any day has shown the time of day. From the second day the usual
    level at that time is known, and the daily rise is no drift."""
    found = busy_hour_loss(CellKpis(KpiSettings(interval_s=10)), 3, random.Random(1))
    assert found[0]
    assert found[1] == found[2] == []


def test_the_first_busy_hour_is_no_drift_where_the_load_rises_with_it():
    """Loss that rises with the cell's load opens nothing on the first day either: while the
    load lies above its own half-hour reference and no earlier day gives a usual level, the
    rise is the load's. A ramp at 3:00 of that day, where the load is flat, is still found
    within half an hour."""
    assert busy_hour_loss(
        CellKpis(KpiSettings(interval_s=10)), 3, random.Random(1), volume=True
    ) == {0: [], 1: [], 2: []}
    midnight = T0 - T0 % 86_400
    at = midnight + 3 * 3_600
    [found] = busy_hour_loss(
        CellKpis(KpiSettings(interval_s=10)), 1, random.Random(2), degraded_at=at, volume=True
    ).values()
    assert found
    assert all(at <= t < at + 1_800 for t in found[:1])


@pytest.mark.parametrize("volume", [False, True])
def test_a_drift_worse_than_the_usual_level_at_its_time_of_day_is_still_found(volume):
    """On the third day, loss ramps 1 point above its usual level at 3:00, where the load is
    low: found within half an hour, as on a cell without a busy hour."""
    midnight = T0 - T0 % 86_400
    at = midnight + 2 * 86_400 + 3 * 3_600
    found = busy_hour_loss(
        CellKpis(KpiSettings(interval_s=10)), 3, random.Random(2), degraded_at=at, volume=volume
    )
    assert found[1] == []
    assert any(at <= t < at + 1_800 for t in found[2])


def test_the_busy_hour_keeps_its_slot_when_the_clocks_go_forward():
    """London's clocks went forward on 2026-03-29: the busy hour (9:00 local) came an hour earlier
    in UTC, ahead of the profile's rise, and drifts for three days with UTC slots (7, 7 and 4
    anomalies here, 0 on the day before). On the subscribers' wall clock it keeps its slot:
    none."""
    london = zoneinfo.ZoneInfo("Europe/London")
    start = datetime(2026, 3, 27, tzinfo=UTC).timestamp()

    def anomalies_after_the_change(zone):
        kpis, rng, found = CellKpis(KpiSettings(interval_s=10, timezone=zone)), random.Random(4), 0
        for i in range(5 * 8_640):
            t = start + 10.0 * (i + 1)
            clock = datetime.fromtimestamp(t, london)
            hour = clock.hour + clock.minute / 60 + clock.second / 3_600
            new = kpis.close(t, {"loss_pct": loss_at(hour, rng)})
            found += len(new) if clock.day >= 29 else 0
        return found

    assert anomalies_after_the_change("Europe/London") == 0
    assert anomalies_after_the_change("UTC") > 0


def test_a_kpi_snapshot_from_before_the_time_of_day_profile_restores_and_learns_it():
    kpis = CellKpis(KpiSettings(interval_s=10))
    rng = random.Random(3)
    for i in range(100):
        kpis.close(T0 + 10 * i, {"loss_pct": 0.3 + abs(rng.gauss(0, 0.1))})
    for k in kpis._kpis:  # as a snapshot taken before the profile was kept
        for name in ("profile", "profile_days", "slot", "slot_sum", "slot_n"):
            k.__dict__.pop(name, None)
    copy = pickle.loads(pickle.dumps(kpis))
    for i in range(100, 300):
        copy.close(T0 + 10 * i, {"loss_pct": 0.3 + abs(rng.gauss(0, 0.1))})
    loss = next(k for k in copy._kpis if k.name == "loss_pct")
    assert loss.profile is not None and sum(loss.profile_days) >= 1


def test_an_open_kpi_incident_explains_held_alerts():
    cell = CellMonitor("c1", CellSettings(hold_s=10))
    rng = random.Random(5)
    run(cell, T0, T0 + 900, rng=rng)
    run(cell, T0 + 900, T0 + 960, experience=75.0, rng=rng)
    assert cell.incident is not None
    _, released = run(cell, T0 + 960, T0 + 990, experience=75.0, bad={"s1"}, alerts={"s1"}, rng=rng)
    assert released and {r.explained_by for r in released} == {cell.incident.incident_id}


def test_alerts_held_while_a_kpi_anomaly_awaits_confirmation_wait_for_its_incident():
    """The shift's first interval starts the KPI's confirmation (two more intervals, 30 s); an
    alert of a subscriber it hurt, held 10 s, waits for it and comes out explained instead of
    going to individual outreach."""
    cell = CellMonitor("c1", CellSettings(hold_s=10))
    rng = random.Random(5)
    run(cell, T0, T0 + 900, rng=rng)
    _, released = run(cell, T0 + 900, T0 + 905, experience=75.0, rng=rng)
    _, more = cell.observe(
        T0 + 905, "s1", degraded=True, experience=30.0, loss=8.0, throughput=20_000.0,
        alert="alert-s1",
    )  # fmt: skip
    released += more
    for start in range(905, 960, 5):
        released += run(cell, T0 + start, T0 + start + 5, experience=75.0, bad={"s1"}, rng=rng)[1]
    assert cell.incident is not None and cell.incident.opened_at > T0 + 905 + 10
    assert released and {r.explained_by for r in released} == {cell.incident.incident_id}


def test_cell_kpis_pickle_and_keep_bounded_state():
    kpis = CellKpis(KpiSettings(interval_s=10))
    rng = random.Random(6)
    for i in range(3_000):
        kpis.close(T0 + 10 * i, {"experience": 80 + rng.gauss(0, 2), "volume": 50.0})
    copy = pickle.loads(pickle.dumps(kpis))
    values = {"experience": 81.0, "volume": 48.0}
    assert copy.close(T0 + 30_010, values) == kpis.close(T0 + 30_010, values)
    assert all(len(k.recent) <= kpis.settings.baseline for k in kpis._kpis)


def test_silent_intervals_are_closed_at_most_max_gap_intervals_at_a_time():
    kpis = CellKpis(KpiSettings(interval_s=10, max_gap_intervals=5))
    assert kpis.slots_due(T0 + 3) == []  # the first call sets the grid
    assert kpis.slots_due(T0 + 10_000) == [T0 + 9_960 + 10 * i for i in range(5)]


def test_median():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0]) == 2.5
    assert median([]) != median([])  # NaN


def test_a_cell_snapshot_from_before_the_kpi_series_restores_and_runs():
    cell = CellMonitor("c1")
    run(cell, T0, T0 + 60)
    old = dict(cell.__dict__)
    del old["kpis"], old["_volume"]
    old["_subs"] = {sid: sub[:4] for sid, sub in old["_subs"].items()}
    settings = object.__new__(CellSettings)  # the settings class as it was: no kpis
    for name in ("window_s", "step_s", "min_affected", "open_share", "resolve_share", "hold_s"):
        object.__setattr__(settings, name, getattr(cell.settings, name))
    old["settings"] = settings
    restored = object.__new__(CellMonitor)
    restored.__setstate__(old)
    assert restored.settings.kpis == KpiSettings()
    run(restored, T0 + 60, T0 + 600)  # no error, and its KPIs run
    assert restored.kpis.next_close > T0 + 590


def test_a_cell_snapshot_from_before_it_kept_its_last_seen_time_restores_and_names_the_dark():
    cell = CellMonitor("c1")
    run(cell, T0, T0 + 900, rng=random.Random(8))
    old = pickle.loads(pickle.dumps(cell)).__dict__
    del old["_last_seen"]
    restored = object.__new__(CellMonitor)
    restored.__setstate__(old)
    assert restored._last_seen == max(sub[0] for sub in cell._subs.values())
    [incident] = opened(run(restored, T0 + 900, T0 + 1000, silent=True)[0])
    assert incident.cause == "outage" and set(incident.affected) == set(SUBS)


def test_a_table_snapshot_from_before_radio_generations_restores_and_runs():
    import numpy as np

    from cxstream.detectors.table import SubscriberTable
    from cxstream.qos import QOS

    table = SubscriberTable()
    state = dict(table.__dict__)
    del state["generation"], state["voice_codec"]
    del state["last_bad_t"], state["fallen"], state["clear_s"]  # and before episodes kept time
    restored = object.__new__(SubscriberTable)
    restored.__setstate__(pickle.loads(pickle.dumps(state)))
    m = np.full((2, len(QOS.columns)), np.nan)
    m[:, QOS.column("rtt_ms")] = 40.0
    restored.observe(["a", "b"], np.array([1.0, 2.0]), np.zeros(2, np.int8), m, np.full(2, np.nan))
    assert len(restored) == 2
    assert restored.clear_s == 60.0 and not restored.fallen.any()


def test_a_table_snapshot_from_before_an_input_was_tracked_restores_and_learns_it():
    import numpy as np

    from cxstream.detectors.table import SubscriberTable
    from cxstream.qos import QOS

    table = SubscriberTable()
    m = np.full((1, len(QOS.columns)), np.nan)
    m[:, QOS.column("rtt_ms")] = 40.0
    m[:, QOS.column("jitter_ms")] = m[:, QOS.column("loss_pct")] = 0.0
    table.observe(["a"], np.array([1.0]), np.zeros(1, np.int8), m, np.full(1, np.nan))
    state = dict(table.__dict__)
    state["inputs"] = table.inputs[:, :-1].copy()  # as a table tracking one input fewer
    restored = object.__new__(SubscriberTable)
    restored.__setstate__(pickle.loads(pickle.dumps(state)))
    m[:, QOS.column("radio_generation")] = 4.0
    restored.observe(["a"], np.array([2.0]), np.zeros(1, np.int8), m, np.full(1, np.nan))
    row = restored.index["a"]
    assert restored.inputs[row, QOS.inputs.index("rtt_ms")] == 40.0
    assert restored.inputs[row, -1] == 4.0


def test_a_table_snapshot_with_one_baseline_for_all_services_gives_each_service_that_baseline():
    import numpy as np

    from cxstream.detectors.table import SubscriberTable
    from cxstream.qos import QOS

    table = SubscriberTable()
    m = np.full((20, len(QOS.columns)), np.nan)
    m[:, QOS.column("rtt_ms")] = 40.0
    m[:, QOS.column("jitter_ms")] = m[:, QOS.column("loss_pct")] = 0.0
    table.observe(["a"] * 20, np.arange(20.0), np.zeros(20, np.int8), m, np.full(20, np.nan))
    state = dict(table.__dict__)
    row = table.index["a"]
    for name in ("z", "gn", "last_cell", "cell_codes", "cell_names"):
        del state[name]
    state["mean"], state["var"] = table.mean[:, 0].copy(), table.var[:, 0].copy()
    restored = object.__new__(SubscriberTable)
    restored.__setstate__(pickle.loads(pickle.dumps(state)))
    assert restored.mean[row].tolist() == [table.mean[row, 0]] * 3
    assert restored.gn[row].tolist() == [20] * 3
    # its data sessions are judged against that baseline at once, and learn their own
    result = restored.observe(
        ["a"], np.array([21.0]), np.array([2], np.int8), m[:1], np.full(1, np.nan)
    )
    assert result.score[0] < 0.5 and restored.gn[row, 2] == 21


def test_a_cell_of_one_subscriber_is_not_judged_by_its_kpis():
    """Its medians are that subscriber's own: their trouble stays theirs (their alert is not
    explained away, so their outreach is not suppressed) and their leaving is no outage."""

    def lone(cell, start, end, *, experience=90.0, silent=False, rng):
        updates, released = [], []
        for k in range(round(end - start)):
            t = start + k
            if silent:
                u, r = cell.tick(t)
            else:
                worse = experience < 50
                u, r = cell.observe(
                    t,
                    "s1",
                    degraded=worse,
                    experience=experience + rng.gauss(0, 3),
                    loss=0.2 + abs(rng.gauss(0, 0.1)),
                    throughput=20_000.0 + rng.gauss(0, 2_000),
                    alert="alert-s1" if worse else None,
                )
            updates += u
            released += r
        return updates, released

    rng = random.Random(6)
    cell = CellMonitor("c1", CellSettings(hold_s=10))
    lone(cell, T0, T0 + 900, rng=rng)
    assert cell.kpis.usual_active == 1
    updates, released = lone(cell, T0 + 900, T0 + 1000, experience=30.0, rng=rng)
    # an interval of one subscriber has no quality KPIs: their experience is not the cell's
    assert opened(updates) == [] and cell.kpis.anomalies == []
    assert released and {r.explained_by for r in released} == {None}
    cell = CellMonitor("c2")
    lone(cell, T0, T0 + 900, rng=rng)
    assert opened(lone(cell, T0 + 900, T0 + 1000, silent=True, rng=rng)[0]) == []
