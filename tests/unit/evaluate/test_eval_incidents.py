from __future__ import annotations

import json

from click.testing import CliRunner

from cxstream.cli import main


def test_eval_incidents_meets_the_bar_on_a_few_scenarios():
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "incidents",
            "--scenarios",
            "3",
            "--duration",
            "120",
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
    assert s["cell_median_delay_s"] is not None and s["cell_median_delay_s"] < 30
    assert s["explained_alerts"] > 0
    assert s["outreach_for_explained"] == 0
