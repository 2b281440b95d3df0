from __future__ import annotations

import sys

import httpx
import pytest

from cxstream.devtools.services import free_port
from cxstream.flows.run import _tune_gil, serve_metrics
from cxstream.settings import load_settings

pytestmark = pytest.mark.integration


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


def test_metrics_listen_on_this_host_only_by_default():
    port = free_port()
    settings = load_settings(overrides={"flow": {"metrics_port": port}})
    server = serve_metrics(settings)
    try:
        assert server is not None
        assert server.server_address[0] == "127.0.0.1"
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "cxstream_events_total" in body
    finally:
        server.shutdown()
    assert serve_metrics(load_settings(overrides={"flow": {"metrics_port": 0}})) is None


def test_the_metrics_address_is_configurable():
    port = free_port()
    settings = load_settings(
        overrides={"flow": {"metrics_port": port, "metrics_host": "127.0.0.2"}}
    )
    server = serve_metrics(settings)
    try:
        assert server.server_address[0] == "127.0.0.2"
        assert httpx.get(f"http://127.0.0.2:{port}/metrics", timeout=5).status_code == 200
    finally:
        server.shutdown()


def _two_free_ports() -> int:
    """A port p such that p and p + 1 are both free now."""
    import socket

    for _ in range(50):
        base = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    pytest.fail("no two consecutive free ports")


def test_process_i_of_a_cluster_serves_on_its_own_port_unless_told_otherwise():
    base = _two_free_ports()
    shared = load_settings(overrides={"flow": {"metrics_port": base}})
    server = serve_metrics(shared, process_id=1)
    try:
        assert server.server_address[1] == base + 1
    finally:
        server.shutdown()
    own = load_settings(
        overrides={"flow": {"metrics_port": base, "metrics_port_per_process": False}}
    )
    server = serve_metrics(own, process_id=2)
    try:
        assert server.server_address[1] == base
    finally:
        server.shutdown()
