from __future__ import annotations

import pickle

from cxstream.detectors.cells import CellMonitor, CellSettings

SETTINGS = CellSettings(
    window_s=60, step_s=1, min_affected=3, open_share=0.3, resolve_share=0.1, hold_s=10, update_s=5
)
SUBS = [f"s{i}" for i in range(10)]


def tick(cell, t, degraded=(), alerts=(), tiers=None):
    """Every subscriber reports once at time t; returns (updates, released)."""
    updates, released = [], []
    for k, sid in enumerate(SUBS):
        u, r = cell.observe(
            t + k * 0.01,
            sid,
            degraded=sid in degraded,
            experience=20.0 if sid in degraded else 90.0,
            tier=(tiers or {}).get(sid),
            alert=f"alert-{sid}-{t}" if sid in alerts else None,
        )
        updates += u
        released += r
    return updates, released


def test_lone_degradation_is_released_after_the_hold_unexplained():
    cell = CellMonitor("c1", SETTINGS)
    _, released = tick(cell, 0, degraded={"s1"}, alerts={"s1"})
    assert released == []  # held
    for t in range(1, 12):
        updates, more = tick(cell, t, degraded={"s1"})
        assert updates == []
        released += more
    assert [(r.subscriber_id, r.explained_by) for r in released] == [("s1", None)]


def test_alerts_wait_while_one_more_degraded_subscriber_would_open_an_incident():
    cell = CellMonitor("c1", SETTINGS)
    updates, released = [], []
    for t in range(0, 40):  # a slow decline: s0 at 0 s, s1 from 5 s, s2 from 25 s
        bad = {"s0"} | ({"s1"} if t >= 5 else set()) | ({"s2"} if t >= 25 else set())
        u, r = tick(cell, t, degraded=bad, alerts={"s0"} if t == 0 else {"s1"} if t == 5 else ())
        updates += u
        released += r
    [opened] = [u for u in updates if u.state == "open"]
    # two degraded at once: they waited (up to window_s) for the incident that came at 25 s
    assert {r.subscriber_id for r in released} == {"s0", "s1"}
    assert {r.explained_by for r in released} == {opened.incident_id}


def test_alerts_waiting_for_an_incident_that_never_comes_are_released_after_window_s():
    cell = CellMonitor("c1", SETTINGS)
    released_at = {}
    for t in range(0, 90):
        u, r = tick(cell, t, degraded={"s0", "s1"}, alerts={"s0", "s1"} if t == 0 else ())
        assert u == []
        released_at |= {x.subscriber_id: t for x in r if x.explained_by is None}
    assert set(released_at) == {"s0", "s1"}
    assert all(60 <= at <= 62 for at in released_at.values())


def test_the_current_wait_is_the_hold_or_the_window_while_an_incident_may_open():
    import dataclasses

    cell = CellMonitor("c1", SETTINGS)
    tick(cell, 0, degraded={"s0"}, alerts={"s0"})
    assert cell.hold_wait_s == 10  # one degraded: the hold (the flow's quiet-cell timer too)
    tick(cell, 1, degraded={"s0", "s1"})
    assert cell.hold_wait_s == 60  # one short of an incident: up to window_s
    idle = CellMonitor("c1", dataclasses.replace(SETTINGS, hold_s=0))
    tick(idle, 0, degraded={"s0", "s1"})
    assert idle.hold_wait_s == 0


def test_a_hold_of_zero_releases_at_once_even_one_short_of_an_incident():
    import dataclasses

    cell = CellMonitor("c1", dataclasses.replace(SETTINGS, hold_s=0))
    _, released = tick(cell, 0, degraded={"s0", "s1"}, alerts={"s0", "s1"})
    released += tick(cell, 1, degraded={"s0", "s1"})[1]
    assert {r.subscriber_id for r in released} == {"s0", "s1"}


def test_cell_incident_opens_explains_held_alerts_updates_and_resolves():
    cell = CellMonitor("c1", SETTINGS)
    tiers = {"s0": "gold", "s1": "bronze", "s2": "silver", "s3": "gold"}
    tick(cell, 0)
    _, early = tick(cell, 1, degraded={"s0", "s1"}, alerts={"s0", "s1"}, tiers=tiers)
    assert early == []
    updates, released = tick(cell, 2, degraded={"s0", "s1", "s2"}, alerts={"s2"}, tiers=tiers)
    # evaluated every step_s on the cell's event-time clock: opens at the next evaluation
    more_updates, more_released = tick(cell, 3, degraded={"s0", "s1", "s2"}, tiers=tiers)
    updates += more_updates
    released += more_released
    [opened] = updates
    assert opened.state == "open"
    assert opened.affected == {"s0": "gold", "s1": "bronze", "s2": "silver"}
    assert opened.share == 0.3
    assert {r.subscriber_id for r in released} == {"s0", "s1", "s2"}
    assert {r.explained_by for r in released} == {opened.incident_id}
    # a fourth subscriber joins: one 'updated' after update_s, listing everyone caught in it
    states = []
    for t in range(4, 13):
        u, r = tick(
            cell, t, degraded={"s0", "s1", "s2", "s3"}, alerts={"s3"} if t == 4 else (), tiers=tiers
        )
        states += [x.state for x in u]
        assert all(x.explained_by == opened.incident_id for x in r)
    assert states == ["updated"]
    # recovery: resolved only after a whole quiet window
    resolved_at = None
    for t in range(13, 100):
        u, _ = tick(cell, t)
        if u:
            assert [x.state for x in u] == ["resolved"]
            assert u[0].incident_id == opened.incident_id
            resolved_at = t
            break
    assert resolved_at is not None and resolved_at >= 13 + 60


def test_flapping_cell_stays_one_incident():
    cell = CellMonitor("c1", SETTINGS)
    opens = []
    for t in range(0, 200):
        bad = {"s0", "s1", "s2", "s3", "s4"} if (t // 10) % 2 == 0 and t >= 20 else set()
        u, _ = tick(cell, t, degraded=bad)
        opens += [x for x in u if x.state == "open"]
    assert len(opens) == 1


def test_small_share_or_few_subscribers_do_not_open_an_incident():
    cell = CellMonitor("c1", SETTINGS)
    for t in range(30):
        u, _ = tick(cell, t, degraded={"s0", "s1"})  # 20 % and only two
        assert u == []


def test_inactive_subscribers_age_out_and_state_pickles():
    cell = CellMonitor("c1", SETTINGS)
    cell.observe(0, "gone", degraded=True, experience=10)
    for t in range(1, 70):
        cell.observe(float(t), "here", degraded=False, experience=90)
    assert set(cell._subs) == {"here"}
    assert pickle.loads(pickle.dumps(cell)).clock == cell.clock


def test_flush_releases_everything_held():
    cell = CellMonitor("c1", SETTINGS)
    cell.observe(0, "s1", degraded=True, experience=10, alert="a")
    assert cell.holding
    assert [r.item for r in cell.flush()] == ["a"]
    assert not cell.holding


def test_an_incident_is_named_alike_whichever_partition_crosses_the_evaluation_first():
    """A replay interleaves the partitions' events differently; the incident opened in the same
    evaluation slot must get the same id (its actions' idempotency keys are built from it)."""
    # two "partitions" of a cell, each in event-time order, interleaved 20 ms apart
    first = [(t + 0.05 * k, f"a{k}") for t in range(8) for k in range(5)]
    second = [(t + 0.02 + 0.05 * k, f"b{k}") for t in range(8) for k in range(5)]

    def run(events):
        cell = CellMonitor("c1", SETTINGS)
        opened = []
        for t, sid in events:
            degraded = t >= 4.0 and sid[1] in "0123"
            updates, _ = cell.observe(t, sid, degraded=degraded, experience=50.0)
            opened += [u for u in updates if u.state == "open"]
        return opened

    in_order = run(sorted(first + second))
    # a replay: each second, the second partition's poll comes before the first's
    replayed = run(
        [e for t in range(8) for e in [*second[t * 5 : t * 5 + 5], *first[t * 5 : t * 5 + 5]]]
    )
    assert len(in_order) == len(replayed) == 1
    assert in_order[0].opened_at != replayed[0].opened_at  # different events crossed the slot
    assert in_order[0].incident_id == replayed[0].incident_id == "inc-c1-5000"


def test_an_alarms_clear_waits_until_its_raise_is_released():
    cell = CellMonitor("c1", SETTINGS)
    tick(cell, 0, degraded={"s1"}, alerts={"s1"})  # s1's alert is held for 10 s
    cell.clear(2.0, "s1", "clear-s1")  # its episode ended 2 s later
    cell.clear(2.0, "s2", "clear-s2")  # another subscriber's: nothing of it is held
    assert cell.clearing
    assert cell.take_clears() == ["clear-s2"]
    released = []
    for t in range(1, 12):
        released += tick(cell, t)[1]
    assert [r.subscriber_id for r in released] == ["s1"]
    assert cell.take_clears() == ["clear-s1"]  # now that the raise went out
    assert not cell.clearing
    cell.clear(20.0, "s3", "clear-s3")
    restored = pickle.loads(pickle.dumps(cell))
    assert restored.take_clears(force=True) == ["clear-s3"]


def test_an_operators_resolve_closes_the_incident_and_holds_it_closed_for_a_window():
    cell = CellMonitor("c1", SETTINGS)
    bad = {"s0", "s1", "s2", "s3"}
    opened = []
    for t in range(0, 4):
        opened += tick(cell, t, degraded=bad)[0]
    [incident] = [u for u in opened if u.state == "open"]
    assert cell.resolve("inc-other", "alice") is None  # not the incident open here
    resolved = cell.resolve(incident.incident_id, "alice")
    assert resolved is not None
    assert (resolved.state, resolved.resolved_by) == ("resolved", "alice")
    assert cell.incident is None
    assert cell.resolve(incident.incident_id, "bob") is None  # closed already
    # still degraded: nothing opens again within window_s (60 s) of the resolve ...
    later = [u for t in range(4, 60) for u in tick(cell, t, degraded=bad)[0]]
    assert later == []
    # ... and a new incident once the window passed with the cell still degraded
    after = [u for t in range(60, 70) for u in tick(cell, t, degraded=bad)[0]]
    assert [u.state for u in after] == ["open"]
    assert after[0].incident_id != incident.incident_id
    assert pickle.loads(pickle.dumps(cell)).incident.incident_id == after[0].incident_id


def test_after_an_operators_resolve_alerts_do_not_wait_for_an_incident_that_cannot_open():
    cell = CellMonitor("c1", SETTINGS)
    bad = {"s0", "s1", "s2", "s3"}
    opened = [u for t in range(0, 4) for u in tick(cell, t, degraded=bad)[0]]
    cell.resolve(opened[0].incident_id, "alice")  # closed for window_s, the cell still degraded
    released_at = {}
    for t in range(4, 30):
        _, r = tick(cell, t, degraded=bad | {"s4"}, alerts={"s4"} if t == 5 else ())
        released_at |= {x.subscriber_id: t for x in r}
    assert released_at == {"s4": 15}  # after hold_s, not window_s


def test_a_cell_with_nobody_active_reports_no_experience_rather_than_zero():
    cell = CellMonitor("c1", SETTINGS)
    for t in range(10):
        tick(cell, t)
    busy = cell.take_stats()
    assert busy is not None and busy.active == len(SUBS) and busy.experience == 90.0
    for t in range(70, 200, 5):  # everybody idle: they age out of the window
        cell.tick(t)
    idle = cell.take_stats()
    assert idle is not None and idle.active == 0 and idle.experience is None
