"""A two-process Bytewax cluster, as deploy/k8s runs three: the input's partitions are shared
between the processes, every event is processed once, a cell whose subscribers' events arrive at
both processes is judged in one place (one incident), and the dashboard (served by process 0)
shows the whole cluster's figures, naming a process whose figures it cannot read."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from cxstream.devtools.flowprocess import FlowProcess, stop_all
from cxstream.devtools.services import free_port, free_ports
from tests.faults.conftest import SECRET, ended, outage_stream, wait_until
from tests.integration.kafka_helpers import produce

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]


def test_a_cluster_shares_the_input_and_its_dashboard_shows_every_process(live_settings, tmp_path):
    assert live_settings.kafka.topics.partitions == 2
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    base = free_ports(2)
    # one recovery directory for both, as the StatefulSet's shared volume, holding lost+found
    recovery = tmp_path / "recovery"
    (recovery / "lost+found").mkdir(parents=True)
    settings = live_settings.model_copy(
        update={"flow": live_settings.flow.model_copy(update={"recovery_dir": str(recovery)})}
    )
    flows: list[FlowProcess] = []
    try:
        for i in (1, 0):  # process 1 first: it waits for process 0 to create the partitions
            workdir = tmp_path / f"p{i}"
            workdir.mkdir()
            cluster = (i, addresses)
            flows.insert(
                0, FlowProcess(settings, workdir, SECRET, cluster=cluster, metrics_base=base)
            )
        first, second = flows
        for flow in flows:
            flow.wait_ready()
        wait_until(lambda: "resuming" in second.log_path.read_text(), 30, "process 1 to find them")
        assert len(list(recovery.glob("part-*.sqlite3"))) == settings.flow.recovery_partitions
        assert "created" in first.log_path.read_text()

        def overview():
            return httpx.get(f"{first.dashboard_url}api/overview", timeout=5).json()

        def health():
            return overview()["health"]

        _, _, records = outage_stream(live_settings, 67, 15_000, outage_s=(5, 25))
        produce(live_settings, live_settings.kafka.topics.qos, records)
        sent = len(records)
        wait_until(lambda: sum(ended(f.counters()) for f in flows) >= sent, 60, "every event")
        counts = [ended(f.counters()) for f in flows]
        assert sum(counts) == sent and min(counts) > 0, counts  # each read its partition
        # the failed cell's subscribers send to both partitions; its events meet in one place
        opened = wait_until(
            lambda: [i for i in overview()["incidents"] if i["cell_id"] == "cell-0003"],
            30,
            "the outage's incident",
        )
        assert len(opened) == 1, opened
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
