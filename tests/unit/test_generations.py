"""The demo's broker generations: what the summary reads across a broker replacement."""

from __future__ import annotations

from cxstream.devtools.generations import Generations

LEARNED = "cxstream_churn_outcomes_total{result=learned}"
REVISION = "cxstream_churn_model_revision{role=learner}"
AUC = "cxstream_churn_roc_auc"


class Process:
    def __init__(self, counters):
        self._counters = counters

    def counters(self, only=None):
        return {k: v for k, v in self._counters.items() if only is None or k.split("{")[0] in only}


def generations(current):
    g = Generations.__new__(Generations)  # no broker nor flow started: only the accounting
    g._base, g._carried, g.current = {}, {}, current
    return g


def test_totals_add_up_and_the_churn_figures_carry_over_until_set_again():
    g = generations(Process({}))
    g.retire({LEARNED: 1000.0, REVISION: 61.0, AUC: 0.76, "cxstream_held_alerts": 3.0})
    # the new generation has learned nothing yet: its gauges read 0
    g.current = Process({LEARNED: 0.0, REVISION: 0.0, AUC: 0.0, "cxstream_held_alerts": 0.0})
    now = g.counters()
    assert now[LEARNED] == 1000.0
    assert (now[REVISION], now[AUC]) == (61.0, 0.76)  # not revision 0 and a ROC AUC of 0
    assert now["cxstream_held_alerts"] == 0.0  # any other gauge is the current process's
    g.current = Process({LEARNED: 20.0, REVISION: 62.0, AUC: 0.78})
    now = g.counters()
    assert (now[LEARNED], now[REVISION], now[AUC]) == (1020.0, 62.0, 0.78)
    assert g.counters(only=["cxstream_held_alerts"]) == {}  # only what was asked for


def test_a_roc_auc_not_measured_yet_is_not_carried_nor_shown():
    nan = float("nan")
    g = generations(Process({}))
    g.retire({AUC: 0.76})
    g.retire({AUC: nan})  # a generation whose window held too few outcomes
    g.current = Process({AUC: nan})
    assert g.counters()[AUC] == 0.76
