"""With privacy.pseudonymise_subscribers on, the whole loop runs on pseudonyms: customers are
enriched and contacted, yet no output topic, webhook payload or Redis key carries a real id."""

from __future__ import annotations

import re

import orjson
import pytest
import redis
from pydantic import SecretStr

from cxstream.actions.receiver import WebhookReceiver
from cxstream.context import ContextStore
from cxstream.devtools.flowprocess import FlowProcess
from cxstream.events import Channel, ConsentStatus
from tests.faults.conftest import SECRET, daytime_policy, ended, outage_stream, wait_until
from tests.integration.kafka_helpers import produce, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "pseudonym-key-for-the-test-0001"


def test_the_loop_runs_on_pseudonyms_and_no_output_names_a_subscriber(live_settings, tmp_path):
    settings = live_settings.model_copy(
        update={
            "policy": live_settings.policy.model_copy(
                update={"file": str(daytime_policy(tmp_path))}
            ),
            "privacy": live_settings.privacy.model_copy(
                update={"pseudonymise_subscribers": True, "subscriber_key": SecretStr(KEY)}
            ),
        }
    )
    pseudonyms = settings.privacy.pseudonyms()
    sim, _, records = outage_stream(settings, 97, 15_000, outage_s=(5, 25))
    # the profiles are the operator's, under the real ids: load them as load-customers does
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    prefix = settings.redis.key_prefix
    for key in client.scan_iter(f"{prefix}:customer:*"):
        client.delete(key)
    granted = {c: ConsentStatus.GRANTED for c in Channel}
    ContextStore(client, prefix=prefix).put_many(
        [
            p.model_copy(
                update={
                    "consent": granted,
                    "timezone": "UTC",
                    "subscriber_id": pseudonyms(p.subscriber_id),
                }
            )
            for p in sim.profiles()
        ]
    )
    produce(settings, settings.kafka.topics.qos, records)
    real = re.compile("|".join(re.escape(s) for s in sim.subscriber_ids))
    with WebhookReceiver(SECRET) as receiver:
        live = settings.model_copy(
            update={"webhook": settings.webhook.model_copy(update={"url": receiver.url})}
        )
        flow = FlowProcess(live, tmp_path, SECRET)
        try:
            flow.wait_ready()
            wait_until(lambda: ended(flow.counters()) >= len(records), 120, "every event")
            wait_until(lambda: len(receiver.delivered) >= 5, 60, "deliveries")
        finally:
            flow.stop()
        payloads = [orjson.dumps(p).decode() for p in receiver.delivered.values()]

    # the loop ran: customers were found (enriched by pseudonym) and contacted
    assert all(p.startswith("ps-") for p in (orjson.loads(x)["subject"] for x in payloads))
    topics = settings.kafka.topics
    outputs = {
        name: read_topic(settings, getattr(topics, name))
        for name in ("alerts", "decisions", "actions", "deliveries", "cells")
    }
    assert outputs["alerts"] and outputs["decisions"] and outputs["actions"]
    for name, values in outputs.items():
        leaks = [v for v in values if real.search(v.decode())]
        assert leaks == [], f"{name}: {leaks[:1]}"
    assert [p for p in payloads if real.search(p)] == []
    keys = [k.decode() for k in client.scan_iter(f"{prefix}:*")]
    assert any(":customer:ps-" in k for k in keys)
    assert [k for k in keys if real.search(k)] == []
