from __future__ import annotations

import pytest

from cxstream.devtools.bench_watch import drained, steady_rates


def test_one_process_steady_is_the_busy_rate():
    samples = [(0.0, (0,)), (1.0, (100,)), (2.0, (300,)), (3.0, (500,)), (4.0, (600,))]
    steady, busy, skew = steady_rates(samples)
    # busy samples: t=1..3 (100..500 of 600), the first and last samples excluded
    assert busy == pytest.approx(200.0)
    assert steady == busy
    assert skew == 0.0


def test_the_tail_after_one_process_ran_out_is_not_the_steady_rate():
    # process 0 reads 100/s and is done at t=4; process 1 reads 50/s until t=8
    samples = [(float(t), (min(100 * t, 400), 50 * t)) for t in range(9)]
    steady, busy, skew = steady_rates(samples)
    assert steady == pytest.approx(150.0)  # t=1..3: both busy
    # t=1..7: 150/s for three seconds, then 50/s alone
    assert busy == pytest.approx((750 - 150) / 6)
    assert skew == pytest.approx(4.0)


def test_a_process_with_nothing_to_read_falls_back_to_the_busy_rate():
    samples = [(0.0, (0, 0)), (1.0, (100, 0)), (2.0, (200, 0)), (3.0, (300, 0))]
    steady, busy, skew = steady_rates(samples)
    assert busy == pytest.approx(100.0)
    assert steady == busy
    assert skew is None


def test_too_few_samples_give_no_rate():
    assert steady_rates([]) == (None, None, None)
    assert steady_rates([(0.5, (1000, 1000))]) == (None, None, 0.0)


def test_a_flow_is_drained_when_the_cells_took_every_event_and_the_broker_every_output():
    processed = "cxstream_events_total{outcome=processed}"
    out = {processed: 900, "cxstream_cell_events_total": 900, "cxstream_kafka_out_queued": 0}
    assert drained(out)
    assert not drained({**out, "cxstream_cell_events_total": 899})  # on its way to the cells
    assert not drained({**out, "cxstream_kafka_out_queued": 2})  # not yet acknowledged
    assert drained({})  # a flow that processed nothing has nothing to wait for
