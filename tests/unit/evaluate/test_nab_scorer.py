"""NAB scoring against hand-computed cases.

File: 1,000 points one minute apart -> probation = floor(0.15 * 1000) = 150 points.
Window: points 500..549 (width 50). sigma(y) = 2 / (1 + e^(5y)) - 1; sigma(-1) = 0.986614.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from cxstream.errors import DataError
from cxstream.evaluate.nab import PROFILES, normalised, probation_length, score_file

TS = [datetime(2026, 1, 1) + timedelta(minutes=i) for i in range(1000)]
WINDOW = [(TS[500], TS[549])]
STANDARD = PROFILES["standard"]


def alerts_at(*indices):
    alerts = [0] * len(TS)
    for i in indices:
        alerts[i] = 1
    return alerts


def test_probation_is_15_percent_capped_at_750_rows():
    assert probation_length(1000) == 150
    assert probation_length(4032) == 604
    assert probation_length(100_000) == 750


def test_detection_at_the_left_edge_is_a_full_true_positive():
    s = score_file(TS, alerts_at(500), WINDOW, STANDARD)
    assert s.score == pytest.approx(1.0)  # position -50/50 = -1: sigma(-1) / sigma(-1)
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)


def test_detection_at_the_right_edge_is_worth_little():
    # position = -(549 - 549 + 1) / 50 = -0.02; sigma(-0.02) = 0.049958; / 0.986614 = 0.050636
    s = score_file(TS, alerts_at(549), WINDOW, STANDARD)
    assert s.score == pytest.approx(0.050636, abs=1e-6)


def test_only_the_earliest_detection_in_a_window_counts():
    # position of 525 = -(549 - 525 + 1) / 50 = -0.5; sigma(-0.5) / sigma(-1) = 0.859793
    s = score_file(TS, alerts_at(525, 530, 549), WINDOW, STANDARD)
    assert s.score == pytest.approx(0.859793, abs=1e-6)
    assert s.tp == 1


def test_false_positive_far_from_any_window_costs_the_full_fp_weight():
    s = score_file(TS, alerts_at(300), WINDOW, STANDARD)
    assert s.score == pytest.approx(-1.0 - 0.11)  # missed window, FP with no window before it
    low_fp = score_file(TS, alerts_at(300), WINDOW, PROFILES["reward_low_FP_rate"])
    assert low_fp.score == pytest.approx(-1.0 - 0.22)


def test_false_positive_shortly_after_a_window_costs_less():
    # y = |549 - 559| / (50 - 1) = 0.204082; sigma(y) = -0.470104; * 0.11 = -0.051711
    s = score_file(TS, alerts_at(500, 559), WINDOW, STANDARD)
    assert s.score == pytest.approx(1.0 - 0.051711, abs=1e-6)
    # beyond 3 widths the full cost applies again: y = 200 / 49 > 3
    far = score_file(TS, alerts_at(500, 749), WINDOW, STANDARD)
    assert far.score == pytest.approx(1.0 - 0.11)


def test_detections_inside_the_probationary_period_are_not_scored():
    s = score_file(TS, alerts_at(10, 149), WINDOW, STANDARD)
    assert s.score == pytest.approx(-1.0)
    assert s.fp == 0


def test_a_window_wholly_inside_probation_is_a_miss_for_every_detector():
    """NAB normalises against every labelled window (perfect = tp_weight x windows): one that no
    detector can see, because it ends before scoring starts, is missed by all, the null one too."""
    early = [(TS[20], TS[60]), *WINDOW]
    s = score_file(TS, alerts_at(20, 500), early, STANDARD)
    assert (s.windows, s.tp, s.fn) == (2, 1, 1)
    assert s.null == -2.0
    assert s.score == pytest.approx(0.0)  # the later window found (+1), the early one missed (-1)
    assert normalised([s], STANDARD) == pytest.approx(50.0)  # 100 * (0 + 2) / (2 + 2)


def test_a_file_with_no_windows_scores_only_its_false_positives():
    quiet = score_file(TS, alerts_at(), [], STANDARD)
    noisy = score_file(TS, alerts_at(200, 400), [], STANDARD)
    assert (quiet.score, quiet.null, quiet.windows) == (0.0, 0.0, 0)
    assert noisy.score == pytest.approx(-0.22)


def test_low_fn_profile_doubles_the_cost_of_a_miss():
    assert score_file(TS, alerts_at(), WINDOW, PROFILES["reward_low_FN_rate"]).score == -2.0


def test_normalisation_null_is_0_perfect_is_100():
    null = [score_file(TS, alerts_at(), WINDOW, STANDARD)]
    perfect = [score_file(TS, alerts_at(500), WINDOW, STANDARD)]
    assert normalised(null, STANDARD) == 0.0
    assert normalised(perfect, STANDARD) == pytest.approx(100.0)
    # over two files: 1 + (-1 - 0.22) against null -2 and perfect 2 -> 100 * 1.78 / 4
    mixed = [*perfect, score_file(TS, alerts_at(200, 300), WINDOW, STANDARD)]
    assert normalised(mixed, STANDARD) == pytest.approx(44.5)


def test_windows_must_match_timestamps():
    with pytest.raises(DataError, match="does not match"):
        score_file(TS, alerts_at(), [(datetime(1999, 1, 1), TS[10])], STANDARD)
