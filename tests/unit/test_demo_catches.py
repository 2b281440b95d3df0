"""The demo says which planned incidents the system caught, from what the dashboard shows."""

from __future__ import annotations

from datetime import timedelta

from cxstream.devtools.demo import Catches, kpi_warmup
from cxstream.devtools.simulate import Incident
from cxstream.events import utcnow
from cxstream.settings import KpiSettingsModel

WARMUP = kpi_warmup(KpiSettingsModel())


def test_a_silent_cell_is_seen_sooner_than_a_mild_shift():
    # a silent cell needs a baseline (10 intervals of 10 s); a mild shift the series detector's
    # first 30 points too
    assert WARMUP == {"kpi_shift": 300.0, "silent_outage": 100.0}


def at(base, seconds):
    return (base + timedelta(seconds=seconds)).isoformat()


def test_each_catch_is_said_once_with_its_delay_and_misses_are_explained():
    said = []
    catches = Catches(said.append, warmup_s=WARMUP)
    t0 = catches.started = utcnow() - timedelta(seconds=600)  # the run began 10 minutes ago
    outage = Incident(
        "cell_outage", "cell-0001", t0 + timedelta(seconds=60), t0 + timedelta(seconds=160)
    )
    shift = Incident(
        "kpi_shift", "cell-0033", t0 + timedelta(seconds=90), t0 + timedelta(seconds=200)
    )
    lone = Incident(
        "subscriber_degradation",
        "cell-0027",
        t0 + timedelta(seconds=75),
        t0 + timedelta(seconds=180),
        "sub-21",
    )
    flap = Incident(
        "flapping", "cell-0022", t0 + timedelta(seconds=100), t0 + timedelta(seconds=200)
    )
    catches.add([outage, shift, lone, flap])
    overview = {
        "incidents": [
            {"cell_id": "cell-0001", "since": at(t0, 30), "cause": "degraded_share"},  # before it
            {"cell_id": "cell-0001", "since": at(t0, 72), "cause": "degraded_share"},
            {"cell_id": "cell-0022", "since": at(t0, 500), "cause": "kpi_anomaly"},  # long after
        ],
        "customers": [
            {"subscriber_id": "sub-21", "last_alert": at(t0, 80), "explained_by": "inc-x"},
        ],
    }
    catches.match(overview, [0, 1, 2, 3])
    assert said == [
        "caught: cell_outage in cell-0001, 12 s after it began (cell incident, cause degraded_share)"
    ]
    # an alert an incident explains is not the lone subscriber's; their own alert is
    overview["customers"] = [
        {"subscriber_id": "sub-21", "last_alert": at(t0, 95), "explained_by": None}
    ]
    catches.match(overview, [1, 2, 3])
    assert (
        said[-1]
        == "caught: subscriber_degradation in cell-0027 for sub-21, 20 s after it began (the subscriber's own alert)"
    )
    catches.match(overview, [1, 3])
    assert len(said) == 2  # nothing new
    lines = catches.lines()
    assert lines[0] == "  planned incidents caught: 2 of 4"
    assert "after 12 s (cell incident, cause degraded_share)" in lines[1]
    assert lines[2].endswith("not caught")
    assert lines[4].endswith("not caught")


def test_an_incident_yet_to_begin_or_cut_short_by_the_stream_stopping_says_so():
    catches = Catches(lambda line: None, warmup_s=WARMUP)
    later = utcnow() + timedelta(hours=1)
    catches.add([Incident("gradual", "cell-0017", later, later + timedelta(minutes=5))])
    assert catches.lines()[1].endswith("not caught: it had not begun when the stream stopped")
    # Ctrl-C: the summary comes after the drain, by when incidents planned after the stream
    # stopped have "begun" on the clock, and one begun just before had seconds to be seen
    stopped = catches.stopped_at = utcnow() - timedelta(seconds=30)
    catches.planned = []
    catches.add(
        [
            Incident("cell_outage", "cell-0043", stopped + timedelta(seconds=12), later),
            Incident("kpi_shift", "cell-0003", stopped - timedelta(seconds=8), later),
        ]
    )
    lines = catches.lines()
    assert lines[1].endswith("not caught: it had not begun when the stream stopped")
    assert lines[2].endswith("not caught (the stream stopped 8 s after it began)")


def test_a_gradual_degradation_begun_in_the_kpi_warm_up_and_missed_says_so():
    catches = Catches(lambda line: None, warmup_s=WARMUP)
    t0 = catches.started = utcnow() - timedelta(seconds=900)
    early, late = (
        Incident("gradual", "cell-0028", t0 + timedelta(seconds=s), t0 + timedelta(seconds=s + 300))
        for s in (84, 400)
    )
    catches.add([early, late])
    lines = catches.lines()
    assert lines[1].endswith(
        "not caught: it began in the cells' first 300 s of traffic, whose KPI series take a slow "
        "decline then as the cell's normal"
    )
    assert lines[2].endswith("not caught")


def test_a_cell_picked_again_while_its_earlier_incident_is_open_says_so():
    catches = Catches(lambda line: None, warmup_s=WARMUP)
    t0 = catches.started = utcnow() - timedelta(seconds=900)
    again = Incident(
        "kpi_shift", "cell-0034", t0 + timedelta(seconds=516), t0 + timedelta(seconds=564)
    )
    catches.add([again])
    earlier = {"cell_id": "cell-0034", "since": at(t0, 405), "cause": "kpi_anomaly"}
    catches.match({"incidents": [{**earlier, "state": "updated", "changed": at(t0, 530)}]}, [0])
    assert catches.lines()[1].endswith(
        "not caught: an incident the cell had before it began was still open (no new one opens)"
    )
    # cleared before the new one began: a plain miss
    catches.match({"incidents": [{**earlier, "state": "cleared", "changed": at(t0, 470)}]}, [0])
    assert catches.lines()[1].endswith("not caught")


def test_an_incident_only_the_kpi_series_see_is_planned_after_their_warm_up():
    """A mild shift in a cell's first minutes cannot be seen (and is learned as its normal):
    the demo moves it past the warm-up in its cycle, or leaves it out where the cycle ends
    first; other kinds stay where they were planned."""
    catches = Catches(lambda line: None, warmup_s=WARMUP)
    t0 = catches.started
    ready = t0 + timedelta(seconds=WARMUP["kpi_shift"] + 60)

    def plan(kind, start_s, cycle_s):
        inc = Incident(
            kind,
            "cell-0040",
            t0 + timedelta(seconds=start_s),
            t0 + timedelta(seconds=start_s + 360),
        )
        return catches.seeable(inc, t0 + timedelta(seconds=cycle_s))

    moved = plan("kpi_shift", 270, 900)
    assert (moved.start, moved.end) == (ready, ready + timedelta(seconds=360))
    assert plan("kpi_shift", 36, 120) is None  # a two-minute cycle ends before the warm-up
    assert plan("kpi_shift", 400, 900).start == t0 + timedelta(seconds=400)
    assert plan("cell_outage", 30, 120).start == t0 + timedelta(seconds=30)
    silent = plan("silent_outage", 30, 900)
    assert silent.start == t0 + timedelta(seconds=WARMUP["silent_outage"] + 60)
