from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from cxstream.devtools.flowprocess import scrape_counters


def _client() -> httpx.Client:
    registry = CollectorRegistry()
    events = Counter("cxstream_events", "events", ["outcome"], registry=registry)
    events.labels("processed").inc(7)
    events.labels("dead_letter").inc(2)
    Counter("cxstream_alerts", "alerts", registry=registry).inc(3)
    Gauge("cxstream_held_alerts", "held", registry=registry).set(4)
    Counter("other_total", "not ours", registry=registry).inc()
    page = generate_latest(registry)
    return httpx.Client(
        transport=httpx.MockTransport(lambda _req: httpx.Response(200, content=page))
    )


def test_sums_counters_and_gauges_by_name_and_labels():
    with _client() as client:
        c = scrape_counters("http://flow/metrics", client=client)
    assert c["cxstream_events_total{outcome=processed}"] == 7
    assert c["cxstream_events_total"] == 9
    assert c["cxstream_alerts_total"] == 3
    assert c["cxstream_held_alerts"] == 4
    assert not any(k.startswith("other") for k in c)


def test_only_parses_the_named_samples():
    with _client() as client:
        c = scrape_counters("http://flow/metrics", client=client, only=["cxstream_events_total"])
    assert c == {
        "cxstream_events_total{outcome=processed}": 7,
        "cxstream_events_total{outcome=dead_letter}": 2,
        "cxstream_events_total": 9,
    }


def test_only_reads_a_named_gauge_as_a_gauge():
    with _client() as client:
        c = scrape_counters("http://flow/metrics", client=client, only=["cxstream_held_alerts"])
    assert c == {"cxstream_held_alerts{}": 4, "cxstream_held_alerts": 4}
