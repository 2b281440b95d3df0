from __future__ import annotations

import sys

import pytest

from cxstream.flows.run import _tune_gil
from cxstream.settings import load_settings


def test_the_flow_process_hands_the_gil_over_at_the_configured_interval():
    saved = sys.getswitchinterval()
    try:
        _tune_gil(load_settings().flow.gil_switch_interval_s)
        # the documented default, not Python's 0.005 (stored in microseconds)
        assert sys.getswitchinterval() == pytest.approx(0.05)
    finally:
        sys.setswitchinterval(saved)
