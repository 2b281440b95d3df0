"""A webhook endpoint that accepts connections and never answers: deliveries time out, the circuit
opens, actions are dead-lettered with the error, and the dataflow keeps its pace."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from cxstream.devtools.flowprocess import FlowProcess
from tests.faults.conftest import SECRET, daytime_policy, ended, outage_stream, wait_until
from tests.integration.kafka_helpers import produce, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults]


class Hanging(BaseHTTPRequestHandler):
    release = threading.Event()
    calls = 0

    def do_POST(self):
        type(self).calls += 1
        self.release.wait(30)  # hang: never answer in time

    def log_message(self, *args):
        return


def test_a_hanging_webhook_endpoint_does_not_stall_the_dataflow(live_settings, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        settings = live_settings.model_copy(
            update={
                "webhook": live_settings.webhook.model_copy(
                    update={
                        "url": url,
                        "timeout_s": 0.5,
                        "max_attempts": 2,
                        "backoff_s": 0.05,
                        "breaker_failures": 3,
                        "breaker_reset_s": 60.0,
                        "retry_schedule_s": [],  # one round, then the dead-letter topic
                    }
                ),
                "policy": live_settings.policy.model_copy(
                    update={"file": str(daytime_policy(tmp_path))}
                ),
            }
        )
        _, _, records = outage_stream(settings, 61, 30_000, outage_s=(15, 40))
        flow = FlowProcess(settings, tmp_path, SECRET)
        try:
            flow.wait_ready()
            t0 = time.monotonic()
            produce(settings, settings.kafka.topics.qos, records)
            wait_until(lambda: ended(flow.counters()) >= len(records), 90, "every event")
            elapsed = time.monotonic() - t0
            wait_until(
                lambda: (
                    flow.counters().get(
                        "cxstream_webhook_deliveries_total{outcome=dead_lettered}", 0
                    )
                    > 0
                ),
                30,
                "dead letters",
            )
            counters = flow.counters()
        finally:
            flow.stop()
    finally:
        Hanging.release.set()
        server.shutdown()

    rate = len(records) / elapsed
    print(f"{rate:,.0f} events/s with the endpoint hanging; {Hanging.calls} calls reached it")
    assert counters["cxstream_events_total{outcome=processed}"] == len(records)
    sent = sum(
        v
        for k, v in counters.items()
        if k.startswith("cxstream_decisions_total{") and "result=sent" in k
    )
    assert sent > 10  # the outage cell's area notices
    # the breaker stopped calling after a few timeouts: far fewer calls than actions x attempts
    assert Hanging.calls < sent
    dead = [
        orjson.loads(v) for v in read_topic(settings, settings.kafka.topics.actions_dead_letters)
    ]
    assert dead
    assert all(d["error"] for d in dead)
    errors = {d["error"] for d in dead}
    assert any("circuit open" in e for e in errors), errors
    assert Hanging.calls >= 3  # it was tried, timed out, and the breaker opened after 3 failures
    assert rate > 2_000  # the flow did not wait for the endpoint (it runs at ~7-12k/s here)
