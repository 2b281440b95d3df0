"""A two-process Bytewax cluster, as deploy/k8s runs three: the input's partitions are shared
between the processes, every event is processed once, and the dashboard (served by process 0)
shows the whole cluster's figures, naming a process whose figures it cannot read."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from cxstream.devtools.flowprocess import FlowProcess, stop_all
from cxstream.devtools.services import free_port, free_ports
from cxstream.devtools.simulate import Simulator
from cxstream.events import utcnow
from tests.faults.conftest import SECRET, ended, stream_in_real_time, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

RATE, RUN_S = 300, 5.0


def test_a_cluster_shares_the_input_and_its_dashboard_shows_every_process(live_settings, tmp_path):
    assert live_settings.kafka.topics.partitions == 2
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    base = free_ports(2)
    flows: list[FlowProcess] = []
    try:
        for i in range(2):
            workdir = tmp_path / f"p{i}"
            workdir.mkdir()
            cluster = (i, addresses)
            flows.append(
                FlowProcess(live_settings, workdir, SECRET, cluster=cluster, metrics_base=base)
            )
        first, second = flows
        for flow in flows:
            flow.wait_ready()

        def health():
            return httpx.get(f"{first.dashboard_url}api/overview", timeout=5).json()["health"]

        sim = Simulator(200, 6, seed=61)
        sent = stream_in_real_time(live_settings, sim, utcnow(), RATE, RUN_S, lambda *_: None)
        wait_until(lambda: sum(ended(f.counters()) for f in flows) >= sent, 60, "every event")
        counts = [ended(f.counters()) for f in flows]
        assert sum(counts) == sent and min(counts) > 0, counts  # each read its partition
        line = wait_until(
            lambda: (h := health())["processed"] + h["dead_letters"] == sent and h, 10, "the sum"
        )
        assert (line["processes"], line["unanswered"]) == (2, [])
        # a process that stops answering is named, not silently left out of the figures
        os.kill(second.proc.pid, signal.SIGSTOP)
        try:
            line = wait_until(lambda: (h := health())["unanswered"] and h, 15, "process 1 named")
            assert line["unanswered"] == [1]
            assert line["processed"] + line["dead_letters"] == counts[0]
        finally:
            os.kill(second.proc.pid, signal.SIGCONT)
        wait_until(lambda: health()["unanswered"] == [], 15, "process 1 read again")
    finally:
        stop_all(flows)
