from __future__ import annotations

import sys

import pytest

from cxstream.flows.run import _tune_gil
from cxstream.settings import load_settings


@pytest.fixture
def switch_interval():
    saved = sys.getswitchinterval()
    yield
    sys.setswitchinterval(saved)


@pytest.mark.usefixtures("switch_interval")
def test_a_cluster_process_hands_the_gil_over_at_the_configured_interval():
    sys.setswitchinterval(0.005)
    _tune_gil(load_settings().flow.gil_switch_interval_s, cluster=True)
    # the documented default, not Python's 0.005 (stored in microseconds)
    assert sys.getswitchinterval() == pytest.approx(0.05)


@pytest.mark.usefixtures("switch_interval")
def test_a_single_worker_keeps_pythons_default():
    sys.setswitchinterval(0.005)
    _tune_gil(0.05, cluster=False)
    assert sys.getswitchinterval() == pytest.approx(0.005)
