"""The soak report: lag in seconds of input, memory per checkpoint (cxstream/devtools/soak.py)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from cxstream.devtools.flowprocess import DemoSummary
from cxstream.devtools.soak import SoakWatch, process_memory_kb, report_lines


def test_lag_in_seconds_of_input_and_the_longest_stretch_over_the_limit():
    now = [0.0]
    watch = SoakWatch(sample_s=1e9, lag_limit_s=2.0, clock=lambda: now[0])
    flow = SimpleNamespace(proc=SimpleNamespace(pid=os.getpid()))
    produced = 0
    for step in range(60):  # 1,000 events/s; the flow falls 5 s behind from 20 s to 35 s
        now[0] = float(step)
        produced += 1000
        lag = 5000 if 20 <= step < 35 else 100
        watch(flow, produced, DemoSummary(events_processed=produced - lag))
    assert watch.max_lag_events == 5000
    assert 4.5 <= watch.max_lag_s <= 5.5
    assert watch.longest_over_s == 14.0


def test_memory_checkpoints_and_growth_after_the_first():
    now = [0.0]
    watch = SoakWatch(sample_s=0.0, checkpoint_s=10.0, clock=lambda: now[0])
    flow = SimpleNamespace(proc=SimpleNamespace(pid=os.getpid()))
    for step in range(41):
        now[0] = float(step)
        watch(flow, step, DemoSummary(events_processed=step))
    report = watch.report(DemoSummary(events_produced=40, events_processed=40))
    flow_memory = report["processes"]["flow"]  # this test's own process stands in
    assert list(flow_memory["rss_mb_at_s"]) == ["10", "20", "30", "40"]
    assert flow_memory["peak_rss_mb"] > 0
    assert isinstance(flow_memory["growth_mb_per_checkpoint_after_first"], float)
    lines = report_lines(report)
    assert any(line.strip().startswith("flow") for line in lines)


def test_a_process_that_is_gone_has_no_memory():
    assert process_memory_kb(2**22 + 12345) is None
