"""Redis stopped for 30 seconds in the middle of a run: events keep flowing with the last known
context marked stale, nobody is contacted on unknown consent, enrichment resumes by itself,
outreach held back for unknown context is decided again once Redis is back, and no delivery is
dead-lettered for want of the delivery ledger."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import orjson
import pytest
import redis
from pydantic import SecretStr

from cxstream.actions.receiver import WebhookReceiver
from cxstream.clients import ensure_topics
from cxstream.context import ContextStore
from cxstream.devtools.flowprocess import FlowProcess
from cxstream.devtools.services import EmbeddedRedis
from cxstream.devtools.simulate import Incident, Simulator
from cxstream.events import Channel, ConsentStatus, utcnow
from cxstream.steps.decide import UNAVAILABLE
from tests.faults.conftest import (
    SECRET,
    actions_on_topic,
    daytime_policy,
    ended,
    parked_actions,
    stream_in_real_time,
    wait_until,
)
from tests.integration.kafka_helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

OUTAGE_AT, OUTAGE_S, RUN_S, RATE = 6.0, 30.0, 48.0, 600


def test_redis_outage_of_30_seconds(live_settings, tmp_path):
    server = EmbeddedRedis(persist=True).start()
    receiver = WebhookReceiver(SECRET).start()
    try:
        settings = live_settings.model_copy(
            update={
                "redis": live_settings.redis.model_copy(
                    update={"url": SecretStr(server.url), "cache_ttl_s": 2.0}
                ),
                "policy": live_settings.policy.model_copy(
                    update={"file": str(daytime_policy(tmp_path))}
                ),
                "webhook": live_settings.webhook.model_copy(update={"url": receiver.url}),
            }
        )
        ensure_topics(settings)
        sim = Simulator(300, 10, seed=51)
        granted = {c: ConsentStatus.GRANTED for c in Channel}
        client = redis.Redis.from_url(server.url)
        ContextStore(client, prefix=settings.redis.key_prefix).put_many(
            [p.model_copy(update={"consent": granted}) for p in sim.profiles()]
        )
        start = utcnow()
        # a cell fails during the outage; a lone subscriber degrades after it
        during = [sid for sid in sim.subscriber_ids if sim.home_cell[sid] == "cell-0002"]
        victim = next(s for s in sim.subscriber_ids if sim.home_cell[s] != "cell-0002")
        sim.add_incidents(
            [
                Incident(
                    "cell_outage",
                    "cell-0002",
                    start + timedelta(seconds=OUTAGE_AT + 8),
                    start + timedelta(seconds=OUTAGE_AT + 22),
                ),
                Incident(
                    "subscriber_degradation",
                    sim.home_cell[victim],
                    start + timedelta(seconds=OUTAGE_AT + OUTAGE_S + 3),
                    start + timedelta(seconds=RUN_S),
                    victim,
                ),
            ]
        )
        flow = FlowProcess(settings, tmp_path, SECRET)
        try:
            flow.wait_ready()
            marks, moments = {}, {}

            def stop_then_restart(elapsed, sent):
                if "before" not in marks and elapsed >= OUTAGE_AT:
                    marks["before"] = flow.counters()
                    server.halt()
                    moments["down"] = utcnow()
                if "before" in marks and "outage" not in marks and elapsed >= OUTAGE_AT + OUTAGE_S:
                    marks["outage"] = flow.counters()
                    moments["up"] = utcnow()
                    server.start()

            sent = stream_in_real_time(settings, sim, start, RATE, RUN_S, stop_then_restart)
            down_at, up_at = moments["down"], moments["up"]
            wait_until(lambda: ended(flow.counters()) >= sent, 60, "every event")
            wait_until(
                lambda: flow.counters().get("cxstream_held_alerts", 0) == 0, 30, "held alerts"
            )
            # every action is delivered: none waits for the ledger any longer
            wait_until(
                lambda: set(actions_on_topic(settings)) <= set(receiver.delivered),
                60,
                "every action delivered",
                every=1.0,
            )
            time.sleep(2)
            end = flow.counters()
            assert flow.proc.poll() is None
        finally:
            flow.stop()

        def delta(name, a, b):
            return (
                marks[b].get(name, 0) - marks[a].get(name, 0)
                if b in marks
                else end.get(name, 0) - marks[a].get(name, 0)
            )

        # no event lost
        assert end["cxstream_events_total{outcome=processed}"] == sent
        # stale context was served and counted during the outage
        assert delta("cxstream_enrichment_lookups_total{result=stale}", "before", "outage") > 0
        # enrichment resumed by itself after Redis came back (fresh reads again)
        after_miss = (
            end["cxstream_enrichment_lookups_total{result=miss}"]
            - marks["outage"]["cxstream_enrichment_lookups_total{result=miss}"]
        )
        assert after_miss > 0
        decisions = [orjson.loads(v) for v in read_topic(settings, settings.kafka.topics.decisions)]
        decisions = [d for d in decisions if "result" in d]
        # no outreach while consent was unknown: from the moment the cache (2 s) could no longer
        # vouch for a profile until Redis was back, nothing was sent or deferred
        blind_from = down_at + timedelta(seconds=settings.redis.cache_ttl_s + 0.5)
        contacted = [d for d in decisions if d["result"] in ("sent", "deferred")]
        blind = [
            d for d in contacted if blind_from <= datetime.fromisoformat(d["decided_at"]) <= up_at
        ]
        assert not blind, blind[:3]
        # the failing cell's subscribers were considered and held back for unknown context
        caught = [
            d
            for d in decisions
            if d["subscriber_id"] in during
            and d["signal"] == "cell_incident"
            and d["source_id"].startswith("inc-cell-0002-")
        ]
        assert caught, "the cell outage during the Redis outage raised no signal"
        assert {d["result"] for d in caught} <= {
            "suppressed:stale_context",
            "suppressed:state_unavailable",
            "sent",
            "deferred",
        }
        assert any(d["result"].startswith("suppressed:") for d in caught)
        # held back only for want of Redis, they were decided again once it was back: each of
        # them (all consenting) got a notice, after the outage
        held = {d["subscriber_id"] for d in caught if d["result"] in UNAVAILABLE}
        notified = {
            d["subscriber_id"]: datetime.fromisoformat(d["decided_at"])
            for d in caught
            if d["result"] == "sent"
        }
        assert held, "nobody was held back for unknown context"
        assert held <= set(notified), sorted(held - set(notified))[:3]
        assert all(notified[s] >= up_at for s in held)
        # and outreach works again afterwards
        assert any(d["subscriber_id"] == victim and d["result"] == "sent" for d in decisions)
        # no delivery failed because the ledger was down: nothing in the dead-letter topic
        assert parked_actions(settings) == {}
        assert receiver.stats()["duplicates"] == 0
    finally:
        receiver.stop()
        server.stop()
