from __future__ import annotations

import shutil

import pytest

from cxstream.devtools.bench import BenchOptions, _plan_cores

pytestmark = pytest.mark.skipif(shutil.which("taskset") is None, reason="pinning needs taskset")


def test_one_worker_gets_a_core_and_the_services_the_rest():
    cores = _plan_cores(BenchOptions(workers=1), cores=[0, 1])
    assert cores.flows == [0]
    assert cores.rest == {1}
    assert cores.ceiling == 0


def test_as_many_processes_as_cores_are_not_pinned():
    # the broker must run somewhere: pinned, it would slow one process down (see _plan_cores)
    cores = _plan_cores(BenchOptions(workers=2), cores=[0, 1])
    assert cores.flows == [None, None]
    assert cores.rest == set()
    assert cores.ceiling == 0  # the ceiling is still one core's


def test_no_pin_pins_nothing():
    cores = _plan_cores(BenchOptions(workers=1, pin=False), cores=[0, 1, 2, 3])
    assert cores.flows == [None]
    assert cores.rest == set()
    assert cores.ceiling is None


def test_spare_cores_go_to_the_services():
    cores = _plan_cores(BenchOptions(workers=2), cores=[0, 1, 2, 3])
    assert cores.flows == [0, 1]
    assert cores.rest == {2, 3}
