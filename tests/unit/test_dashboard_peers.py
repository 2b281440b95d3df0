"""The dashboard's health line in a cluster: the other processes' figures join process 0's."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from cxstream.dashboard import app
from cxstream.dashboard import peers as peers_mod
from cxstream.dashboard.app import _Health
from cxstream.dashboard.peers import Peers


def page(processed: float, *, lag: float = 0.0, state: str = "ok", silent: float = 0.2) -> str:
    flags = "\n".join(
        f'cxstream_flow_health{{cxstream_flow_health="{s}"}} {1.0 if s == state else 0.0}'
        for s in ("ok", "lagging", "stalled")
    )
    return f"""# HELP cxstream_events_total Events by outcome.
# TYPE cxstream_events_total counter
cxstream_events_total{{outcome="processed"}} {processed}
cxstream_events_total{{outcome="dead_letter"}} 2.0
cxstream_events_created{{outcome="processed"}} 1.7e9
# TYPE cxstream_webhook_deliveries_total counter
cxstream_webhook_deliveries_total{{outcome="delivered"}} 5.0
# TYPE bytewax_kafka_consumer_lag gauge
bytewax_kafka_consumer_lag{{partition="2"}} {lag}
# TYPE cxstream_flow_health gauge
{flags}
# TYPE cxstream_kafka_input_silent_seconds gauge
cxstream_kafka_input_silent_seconds {silent}
"""


class Cluster:
    """Pages served by processes 1 and 2, a clock, and a fetch that reads them (or fails)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pages: dict[str, str | Exception] = {}

    def fetch(self, url: str, timeout_s: float) -> str:
        answer = self.pages[url]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def peers(self) -> Peers:
        urls = {1: "http://p1/metrics", 2: "http://p2/metrics"}
        return Peers(3, urls, fetch=self.fetch, clock=lambda: self.now, stale_s=5.0)


def test_a_peer_that_answers_is_read_and_one_that_does_not_is_named():
    c = Cluster()
    c.pages = {"http://p1/metrics": page(100.0, lag=7.0), "http://p2/metrics": OSError("refused")}
    p = c.peers()
    p.poll()
    fresh, unanswered = p.read()
    assert set(fresh) == {1} and unanswered == [2]
    assert (fresh[1].done["processed"], fresh[1].done["webhook_delivered"]) == (100.0, 5.0)
    assert fresh[1].lag == 7.0
    # figures older than stale_s are not shown as if current
    c.now = 6.0
    assert p.read() == ({}, [1, 2])


def test_garbage_or_an_oversized_page_counts_as_unanswered(monkeypatch):
    c = Cluster()
    c.pages = {"http://p1/metrics": "cxstream_events_total{outcome=", "http://p2/metrics": ""}
    p = c.peers()
    p.poll()
    assert p.read()[1] == [1]  # an empty page is a process with no figures yet: read
    monkeypatch.setattr(peers_mod, "MAX_PAGE_BYTES", 10)

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            return b"x" * n

    monkeypatch.setattr(peers_mod.urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(ValueError, match="more than 10 bytes"):
        peers_mod._fetch("http://p1/metrics", 1.0)


@pytest.fixture
def quiet_registry(monkeypatch):
    """Process 0's own registry, empty (other tests count events in this process's)."""
    monkeypatch.setattr(app, "REGISTRY", CollectorRegistry())


def test_the_health_line_is_the_whole_clusters(quiet_registry):
    c = Cluster()
    c.pages = {
        "http://p1/metrics": page(1_000.0, lag=30.0, state="lagging", silent=0.1),
        "http://p2/metrics": page(2_000.0, lag=12.0, silent=14.2),
    }
    p = c.peers()
    health = _Health(clock=lambda: c.now, peers=p)
    p.poll()
    first = health.read()
    assert first["processes"] == 3 and first["unanswered"] == []
    assert (first["processed"], first["dead_letters"]) == (3_000.0, 4.0)
    assert first["webhook_delivered"] == 10.0
    assert first["lag"] == 42.0
    assert first["state"] == "lagging"  # the worst of the processes'
    assert first["kafka_silent_s"] == 14  # the longest silence, shown from 10 s
    assert first["events_per_s"] is None  # nothing to compare with yet
    c.now = 1.0
    c.pages["http://p1/metrics"] = page(1_500.0)
    c.pages["http://p2/metrics"] = page(2_300.0)
    p.poll()
    second = health.read()
    assert second["events_per_s"] == pytest.approx(800.0)  # 500 + 300 a second
    assert second["state"] == "ok" and second["kafka_silent_s"] is None


def test_a_peer_that_restarted_does_not_make_the_rate_negative(quiet_registry):
    c = Cluster()
    c.pages = {"http://p1/metrics": page(9_000.0), "http://p2/metrics": page(0.0)}
    p = c.peers()
    health = _Health(clock=lambda: c.now, peers=p)
    p.poll()
    health.read()
    c.now = 1.0
    c.pages["http://p1/metrics"] = page(40.0)  # its counters began again
    c.pages["http://p2/metrics"] = page(100.0)
    p.poll()
    assert health.read()["events_per_s"] == pytest.approx(100.0)
    c.now = 2.0
    c.pages["http://p1/metrics"] = page(240.0)
    c.pages["http://p2/metrics"] = page(200.0)
    p.poll()
    assert health.read()["events_per_s"] == pytest.approx(300.0)


def test_a_process_alone_has_no_peers():
    health = _Health()
    line = health.read()
    assert (line["processes"], line["unanswered"]) == (1, [])


def test_peers_are_read_at_the_same_time_so_one_that_hangs_does_not_hold_the_others():
    import threading

    asked = {1: threading.Event(), 2: threading.Event()}

    def fetch(url: str, timeout_s: float) -> str:
        me = 1 if "p1" in url else 2
        asked[me].set()
        # each answers only once the other was asked: read one after the other, neither would
        if not asked[3 - me].wait(5.0):
            raise TimeoutError
        return page(10.0)

    p = Peers(3, {1: "http://p1/metrics", 2: "http://p2/metrics"}, fetch=fetch)
    p.poll()
    fresh, unanswered = p.read()
    assert set(fresh) == {1, 2} and unanswered == []
    p.stop()
