"""Every streaming detector keeps River's conventions: a clone is a fresh detector with the same
parameters, a pickle round trip changes nothing that follows (the flow's recovery snapshots are
pickles), scoring does not learn, and memory stays bounded however long the stream."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxstream.detectors.degradation import ExperienceDropDetector
from cxstream.detectors.series import ContextLikelihoodDetector, SeriesMonitor


def series_points(n, seed=3):
    """Five-minute points: the first 1,000 run into a fourth day, so every part of the series
    detector (the seasonal stretch from the third day on) is learning when it is cloned,
    pickled and compared."""
    rng = random.Random(seed)
    for i in range(n):
        burst = 40.0 if rng.random() < 0.002 else 0.0
        yield {"value": 50 + 10 * math.sin(i / 40) + rng.gauss(0, 2) + burst, "t": 300.0 * i}


def experience_points(n, seed=4):
    rng = random.Random(seed)
    for i in range(n):
        yield {"experience": 80 + rng.gauss(0, 5) - (40 if 600 <= i < 620 else 0)}


DETECTORS = [
    (ContextLikelihoodDetector, series_points),
    (ExperienceDropDetector, experience_points),
]


@pytest.mark.parametrize(("make", "points"), DETECTORS, ids=lambda v: getattr(v, "__name__", ""))
def test_clone_pickle_score_before_learn_and_bounded_memory(make, points):
    det = make()
    stream = list(points(3000))
    for x in stream[:1000]:
        det.score_one(x)
        det.learn_one(x)
    fresh = det.clone()
    assert type(fresh) is type(det) and fresh._get_params() == det._get_params()
    assert pickle.dumps(fresh) == pickle.dumps(make())  # a clone has learned nothing

    restored = pickle.loads(pickle.dumps(det))
    before = pickle.dumps(det)
    det.score_one(stream[1000])
    assert pickle.dumps(det) == before  # scoring does not learn
    for x in stream[1000:2000]:
        assert restored.score_one(x) == det.score_one(x)
        restored.learn_one(x)
        det.learn_one(x)

    size_2000 = len(pickle.dumps(det))
    for x in points(20_000, seed=9):
        det.learn_one(x)
    assert len(pickle.dumps(det)) <= size_2000 * 1.05 + 64  # no growth with the stream


def test_the_series_monitor_pickles_mid_stream_and_resumes_identically():
    monitor = SeriesMonitor.default()
    stream = list(series_points(4000))
    for x in stream[:2000]:
        monitor.observe(x["value"], x["t"])
    copy = pickle.loads(pickle.dumps(monitor))
    for x in stream[2000:]:
        assert copy.observe(x["value"], x["t"]) == monitor.observe(x["value"], x["t"])


@pytest.mark.parametrize(("make", "points"), DETECTORS, ids=lambda v: getattr(v, "__name__", ""))
@given(pattern=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8))
@settings(max_examples=25, deadline=None)
def test_any_value_is_scored_as_a_finite_number_and_never_raises(make, points, pattern):
    det = make()
    template = next(points(1))
    key = next(k for k in template if k != "t")
    for i, x in enumerate(points(1200)):
        x = {**x, key: pattern[i % len(pattern)]}
        assert math.isfinite(det.score_one(x))
        det.learn_one(x)
