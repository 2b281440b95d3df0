from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cxstream.cli import main


def test_eval_incidents_meets_the_bar_on_a_few_scenarios():
    # 25 minutes each: long enough for the cell KPIs' baselines (the mild shift and the silent
    # cell are only seen there) and for a gradual degradation over 15 minutes
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "incidents",
            "--scenarios",
            "3",
            "--duration",
            "1500",
            "--rate",
            "40",
            "--subscribers",
            "150",
            "--cells",
            "8",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    s = json.loads(result.output.strip().splitlines()[-1])
    assert s["scenarios"] == 3
    assert s["cell_recall"] >= 0.95
    assert s["cell_precision"] >= 0.9
    assert s["individual_recall"] >= 0.95
    assert s["individual_precision"] >= 0.9
    assert s["cell_median_delay_s"] is not None
    assert s["explained_alerts"] > 0
    assert s["outreach_for_explained"] == 0
    # a silent cell's outage names where its subscribers went (the simulator's neighbour)
    assert s["silent_neighbour_named"] >= 0.9
    # ... and names as affected its subscribers of the minute before it went dark, nobody else
    assert s["silent_subscribers_named"] >= 0.9
    assert s["silent_named_elsewhere"] == 0
    assert s["late_events"] > 0  # the backlog was late, and counted
    kinds = s["cell_by_kind"]
    assert set(kinds) == {
        "cell_outage",
        "flapping",
        "gradual",
        "kpi_shift",
        "silent_outage",
    }
    assert all(k["incidents"] == 3 and k["recall"] >= 0.95 for k in kinds.values()), kinds
    # seconds: a shared degradation at once, a KPI after its confirmation (three 10 s points),
    # a ramp long before it is over (it takes 15 minutes here)
    limits = {
        "cell_outage": 30,
        "flapping": 30,
        "kpi_shift": 90,
        "silent_outage": 90,
        "gradual": 450,
    }
    assert all(kinds[k]["median_delay_s"] < limit for k, limit in limits.items()), kinds
    # and an incident stays open while the trouble lasts (its delay costs the rest)
    assert s["cell_open_share"] >= 0.9, s["cell_open_share"]
    assert all(k["open_share"] >= 0.8 for k in kinds.values()), kinds


def test_the_open_share_is_the_union_of_a_cells_incidents_over_the_true_span():
    from datetime import UTC, datetime, timedelta

    from cxstream.devtools.simulate import Incident
    from cxstream.evaluate.incidents import IncidentReport, _score_open

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0 + timedelta(seconds=s)

    truth = [
        Incident("kpi_shift", "c1", at(0), at(100)),
        Incident("cell_outage", "c2", at(0), at(50)),
    ]
    spans = [
        ("c1", at(10), at(50)),
        ("c1", at(40), at(60)),  # overlaps the first: counted once
        ("c1", at(80), None),  # still open at the end of the run
        ("c9", at(0), at(100)),  # another cell's
    ]
    report = IncidentReport()
    _score_open(report, truth, spans, at(200))
    assert report.open_share == {"kpi_shift": [0.7], "cell_outage": [0.0]}


@pytest.mark.slow
def test_eval_incidents_clean_counts_the_false_cell_incidents_of_a_quiet_night():
    """Without incidents every cell incident is a false one. From midnight to 6:00 a cell's
    median experience is that of two or three subscribers an interval: a single interval far
    below its reference must not pass the drift statistic's decision level alone (14 false
    incidents in these 6 hours, 3.7 per cell-day, when it could; 2 now)."""
    args = ["eval", "incidents", "--clean", "--scenarios", "1", "--duration", "21600"]
    result = CliRunner().invoke(main, [*args, "--rate", "30", "--json"])
    assert result.exit_code == 0, result.output
    assert "false cell incidents:" in result.output
    s = json.loads(result.output.strip().splitlines()[-1])
    assert s["cell_by_kind"] == {}  # nothing planned
    assert s["cell_false_per_cell_day"] <= 1.0, s
