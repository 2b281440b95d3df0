"""Webhook delivery end to end: a real HTTP receiver that fails, a real broker for dead letters."""

from __future__ import annotations

import base64
import itertools
from datetime import UTC, datetime

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from cxstream.actions.receiver import WebhookReceiver
from cxstream.actions.store import RedisClaimStore
from cxstream.actions.webhook import WebhookSender
from cxstream.events import Action
from cxstream.flows.sinks import WebhookSink
from tests.integration.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"delivery-test-secret-123").decode()
T = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def actions(n):
    return [
        Action(
            action_id=f"inc-1:s{i}:area_notice",
            kind="area_notice",
            subscriber_id=f"s{i}",
            channel="sms",
            reason="cell_incident",
            alert_id="inc-1",
            event_time=T,
            created_at=T,
        )
        for i in range(n)
    ]


def deliver(settings, receiver, items, *, max_attempts=3, ledger=None, schedule=()):
    def make_sender():
        return WebhookSender(
            receiver.url,
            SECRET,
            max_attempts=max_attempts,
            backoff_s=0.1,
            timeout_s=2.0,
            ledger=ledger,
        )

    flow = Dataflow("webhook-test")
    stream = op.key_on("key", op.input("in", flow, TestingSource(items)), lambda a: a.subscriber_id)
    op.output(
        "out",
        stream,
        WebhookSink(
            make_sender,
            producer_config=settings.kafka.client_config(),
            dlq_topic=settings.kafka.topics.actions_dead_letters,
            concurrency=4,
            schedule=schedule,  # one round unless a test gives later ones
        ),
    )
    run_main(flow)  # the sink's close() waits for the pool to finish


def test_failing_receiver_gets_exactly_one_delivery_per_key_with_backoff(live_settings):
    items = actions(6)
    with WebhookReceiver(SECRET, fail_first=2) as receiver:
        deliver(live_settings, receiver, items)
        stats = receiver.stats()
        assert stats["deliveries"] == 6
        assert stats["duplicates"] == 0
        assert stats["rejected"] == 0  # every attempt carried a valid signature
        assert set(receiver.attempts.values()) == {3}
        for times in receiver.attempt_times.values():
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert gaps[0] >= 0.04  # 0.1 s x (0.5..1.5)
            assert gaps[1] >= 0.09  # 0.2 s x (0.5..1.5): it backs off
        body = receiver.delivered["inc-1:s0:area_notice"]
        assert body["data"]["@type"] == "CommunicationMessage"
    assert (
        read_topic(live_settings, live_settings.kafka.topics.actions_dead_letters, timeout_s=5)
        == []
    )


def test_after_the_last_attempt_the_action_is_dead_lettered_with_the_error(live_settings):
    with WebhookReceiver(SECRET, fail_first=10) as receiver:
        deliver(live_settings, receiver, actions(3), max_attempts=3)
        assert receiver.deliveries == 0
        assert set(receiver.attempts.values()) == {3}
    dead = [
        orjson.loads(v)
        for v in read_topic(live_settings, live_settings.kafka.topics.actions_dead_letters)
    ]
    assert sorted(d["action"]["action_id"] for d in dead) == sorted(a.action_id for a in actions(3))
    assert {d["error"] for d in dead} == {"HTTP 503"}


def test_a_receiver_failing_for_several_rounds_gets_each_action_once_and_nothing_is_dead_lettered(
    live_settings,
):
    with WebhookReceiver(SECRET, fail_first=5) as receiver:  # 503 to each id's first five POSTs
        deliver(live_settings, receiver, actions(4), max_attempts=2, schedule=(0.05, 0.1, 0.2))
        assert receiver.deliveries == 4
        assert set(receiver.attempts.values()) == {6}  # the third round's second attempt
    assert (
        read_topic(live_settings, live_settings.kafka.topics.actions_dead_letters, timeout_s=5)
        == []
    )


def test_a_replay_after_restart_is_not_delivered_twice(live_settings, redis_conn):
    ledger = RedisClaimStore(redis_conn)
    items = actions(4)
    with WebhookReceiver(SECRET) as receiver:
        deliver(live_settings, receiver, items, ledger=ledger)
        deliver(live_settings, receiver, items, ledger=ledger)  # the same actions, replayed
        assert receiver.stats()["deliveries"] == 4
        assert receiver.stats()["attempts"] == 4


def test_redeliver_sends_the_dead_letters_chosen_once_with_their_webhook_id(
    live_settings, tmp_path
):
    import json

    import yaml
    from click.testing import CliRunner

    from cxstream.cli import main

    with WebhookReceiver(SECRET, fail_first=10) as down:  # three actions end as dead letters
        deliver(live_settings, down, actions(3), max_attempts=1)
    with WebhookReceiver(SECRET) as up:
        config = tmp_path / "cxstream.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "kafka": {
                        "brokers": live_settings.kafka.brokers,
                        "topics": live_settings.kafka.topics.model_dump(),
                    },
                    "redis": {
                        "url": live_settings.redis.url.get_secret_value(),
                        "key_prefix": live_settings.redis.key_prefix,
                    },
                    "webhook": {"url": up.url, "secret": SECRET, "allow_http": True},
                }
            )
        )

        def run(*args):
            result = CliRunner().invoke(main, ["redeliver", "--config", str(config), *args])
            return result, json.loads(result.output.strip().splitlines()[-1])

        result, dry = run("--reason", "503", "--dry-run", "--json")
        assert result.exit_code == 0, result.output
        assert (dry["matched"], up.deliveries) == (3, 0)
        one = actions(3)[1].action_id
        result, first = run("--id", one, "--json")
        assert (first["matched"], first["delivered"], up.deliveries) == (1, 1, 1)
        result, rest = run("--reason", "503", "--json")
        assert (rest["delivered"], rest["already_delivered"]) == (2, 1)
        result, again = run("--json")  # nobody is contacted twice
        assert (again["delivered"], again["already_delivered"]) == (0, 3)
        assert up.deliveries == 3
        assert sorted(up.delivered) == sorted(a.action_id for a in actions(3))
        result, none = run("--since", "2999-01-01T00:00:00+00:00", "--json")
        assert none["matched"] == 0
