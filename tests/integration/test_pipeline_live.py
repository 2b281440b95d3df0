"""The production dataflow on real parts: Tansu broker, redis-server, HTTP receiver."""

from __future__ import annotations

import base64
import signal
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import redis

from cxstream.actions.receiver import WebhookReceiver
from cxstream.context import ContextStore
from cxstream.devtools.flowprocess import FlowProcess
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.events import Channel, ConsentStatus, CustomerContext, utcnow
from tests.integration.kafka_helpers import produce, read_topic

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"integration-test-secret!").decode()


def malformed_records(start):
    good = {
        "event_id": "x",
        "event_time": start.isoformat(),
        "subscriber_id": "sub-0000001",
        "cell_id": "cell-0000",
        "service": "voice",
        "rtt_ms": 40,
    }
    return {
        b"this is not json": "not_json",
        b"": "not_json",
        orjson.dumps({k: v for k, v in good.items() if k != "cell_id"}): "missing_field",
        orjson.dumps({**good, "rtt_ms": "slow"}): "bad_type",
        orjson.dumps({**good, "service": "telepathy"}): "bad_type",
        orjson.dumps({**good, "loss_pct": 101}): "out_of_range",
        orjson.dumps({**good, "rtt_ms": -4}): "out_of_range",
        orjson.dumps({**good, "event_time": "1999-01-01T00:00:00Z"}): "stale",
    }


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def test_events_end_processed_or_dead_lettered_incident_alerts_and_webhook_is_signed(
    live_settings, tmp_path
):
    settings = live_settings
    topics = settings.kafka.topics
    sim = Simulator(40, 3, seed=21)
    victim = sim.subscriber_ids[5]
    start = utcnow() - timedelta(seconds=40)
    sim.add_incidents(
        [
            Incident(
                "subscriber_degradation",
                sim.home_cell[victim],
                start + timedelta(seconds=20),
                start + timedelta(seconds=40),
                victim,
            )
        ]
    )
    granted = {c: ConsentStatus.GRANTED for c in Channel}
    profiles = [p.model_copy(update={"consent": granted}) for p in sim.profiles()]
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    ContextStore(client, prefix=settings.redis.key_prefix).put_many(profiles)

    times = sim.timeline(start, 100, diurnal=False)
    good = [sim.encoded(next(times)) for _ in range(4000)]  # 40 s of events
    bad = malformed_records(start)
    records = good[:1000] + [(None, raw) for raw in bad] + good[1000:]
    produce(settings, topics.qos, records)
    update = CustomerContext(
        subscriber_id="sub-new", language="fr", consent={Channel.SMS: "granted"}
    )
    produce(
        settings,
        topics.customers,
        [(b"sub-new", update.model_dump_json().encode()), (b"x", b'{"subscriber_id": 5}')],
    )

    # A policy without quiet hours or hold-out, so the outcome does not depend on the time of day.
    policy = tmp_path / "policy.yaml"
    text = Path("config/policy.yaml").read_text()
    text = text.replace(
        'quiet_hours: {start: "21:00:00", end: "08:00:00"}',
        'quiet_hours: {start: "00:00:00", end: "00:00:00"}',
    )
    assert "00:00:00" in text
    assert "holdout: {share: 0.05" in text
    policy.write_text(text.replace("holdout: {share: 0.05", "holdout: {share: 0.0"))
    with WebhookReceiver(SECRET) as receiver:
        live = settings.model_copy(
            update={
                "webhook": settings.webhook.model_copy(update={"url": receiver.url}),
                "policy": settings.policy.model_copy(update={"file": str(policy)}),
                "history": settings.history.model_copy(update={"interval_s": 5.0}),
            }
        )
        flow = FlowProcess(live, tmp_path, SECRET)
        try:
            flow.wait_ready()

            def done():
                c = flow.counters()
                ended = (
                    c["cxstream_events_total{outcome=processed}"]
                    + c["cxstream_events_total{outcome=dead_letter}"]
                )
                return ended >= len(records) and receiver.deliveries >= 1

            wait_for(done, 90, "every event to be processed or dead-lettered and a delivery")
            counters = flow.counters()
            # stopped as Kubernetes stops a pod: a clean stop, with status 0 and no traceback
            flow.proc.send_signal(signal.SIGTERM)
            assert flow.proc.wait(20) == 0
        finally:
            flow.stop()
        log_text = flow.log_path.read_text()
        assert "stopped by SIGTERM" in log_text and "Traceback" not in log_text, log_text[-2000:]

        assert counters["cxstream_events_total{outcome=processed}"] == len(good)
        assert counters["cxstream_events_total{outcome=dead_letter}"] == len(bad)

        dead = [orjson.loads(v) for v in read_topic(settings, topics.dead_letters)]
        qos_dead = [d for d in dead if d["kind"] == "qos"]
        assert sorted(d["reason"] for d in qos_dead) == sorted(bad.values())
        for d in qos_dead:
            assert d["topic"] == topics.qos
            assert d["partition"] is not None and d["offset"] is not None
            assert base64.b64decode(d["raw_b64"]) in bad
        assert [d["reason"] for d in dead if d["kind"] == "customer"] == ["bad_type"]

        alerts = [orjson.loads(v) for v in read_topic(settings, topics.alerts)]
        assert victim in {(a.get("x-cxstream") or {}).get("subscriber_id") for a in alerts}
        assert all(a.get("@type") == "Alarm" for a in alerts)  # TMF642, individual ones too
        actions = [orjson.loads(v) for v in read_topic(settings, topics.actions)]
        assert victim in {a["subscriber_id"] for a in actions}
        decisions = [orjson.loads(v) for v in read_topic(settings, topics.decisions)]
        assert victim in {d.get("subscriber_id") for d in decisions if d.get("result") == "sent"}

        stats = receiver.stats()
        assert stats["rejected"] == 0  # every request carried a valid signature
        assert stats["duplicates"] == 0
        delivered = [e["data"]["receiver"][0]["id"] for e in receiver.delivered.values()]
        assert victim in delivered
        assert len(delivered) == len(actions)

    # the victim's experience history: one sample per 5 s of its events (40 s of traffic)
    history = ContextStore(client, prefix=settings.redis.key_prefix).history(victim)
    assert len(history) >= 6, (
        history,
        {k: client.llen(k) for k in client.keys(f"{settings.redis.key_prefix}:history:*")},
    )
    assert min(v for _, v in history) < 50 < max(v for _, v in history)  # the degradation shows
    stored = client.get(f"{settings.redis.key_prefix}:customer:sub-new")
    assert stored is not None and orjson.loads(stored)["language"] == "fr"
