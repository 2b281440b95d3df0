"""Customer updates merge into the stored profile on the real Redis: a partial update changes only
what it carries, an older update never overrides a newer one (consent channel by channel), and
updates that arrive while Redis is down are dead-lettered with their own bytes and applied when
it is back."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest
import redis

from cxstream.batches import SourceMessage
from cxstream.context import ContextStore
from cxstream.devtools.services import EmbeddedRedis
from cxstream.events import Channel, ConsentStatus, CustomerContext, CustomerUpdate
from cxstream.flows.sinks import _CustomerPartition
from cxstream.steps.ingest import parse_customer_batch

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
GRANTED = {c.value: "granted" for c in Channel}


def updates(*records: dict) -> list[CustomerUpdate]:
    messages = [SourceMessage(orjson.dumps(r), "cx.customers", 0, i) for i, r in enumerate(records)]
    parsed = parse_customer_batch(messages)
    assert all(isinstance(p, CustomerUpdate) for p in parsed), parsed
    return parsed  # type: ignore[return-value]


def stored(client: redis.Redis, sid: str = "s1") -> CustomerContext:
    fresh = ContextStore(client, ttl_s=0.0)
    customer = fresh.get_many([sid])[sid].customer
    assert customer is not None
    return customer


def new_yorker() -> dict:
    return {
        "subscriber_id": "s1",
        "account_id": "acc-1",
        "timezone": "America/New_York",
        "value_tier": "gold",
        "monthly_charge": 89.5,
        "consent": GRANTED,
        "consent_updated": "2026-12-01T00:00:00Z",
        "updated_at": "2026-12-01T00:00:00Z",
    }


def test_a_partial_update_changes_only_what_it_carries(redis_conn):
    store = ContextStore(redis_conn)
    store.merge_many(updates(new_yorker()), now=NOW)
    # a consent-only update: the time zone, tier and account stay
    store.merge_many(
        updates(
            {
                "subscriber_id": "s1",
                "consent": {"sms": "revoked"},
                "consent_updated": "2026-12-02T00:00:00Z",
            }
        ),
        now=NOW,
    )
    # a ticket count only: consent stays
    store.merge_many(updates({"subscriber_id": "s1", "open_tickets": 2}), now=NOW)
    c = stored(redis_conn)
    assert (c.timezone, c.value_tier, c.account_id, c.monthly_charge) == (
        "America/New_York",
        "gold",
        "acc-1",
        89.5,
    )
    assert c.open_tickets == 2
    assert c.consent[Channel.SMS] is ConsentStatus.REVOKED
    assert all(c.consent[ch] is ConsentStatus.GRANTED for ch in Channel if ch is not Channel.SMS)
    assert store.get_many(["s1"])["s1"].customer == c  # the writer's cache holds the merge


def test_an_older_update_never_overrides_a_newer_one(redis_conn):
    store = ContextStore(redis_conn)
    store.merge_many(updates(new_yorker()), now=NOW)
    revoke = {"subscriber_id": "s1", "consent": {"sms": "revoked"}}
    store.merge_many(updates({**revoke, "consent_updated": "2026-12-02T10:00:00Z"}), now=NOW)
    # an older grant arrives late: the revoke stands; an older grant of e-mail, newer than the
    # e-mail consent stored, applies (consent goes channel by channel)
    late = {
        "subscriber_id": "s1",
        "consent": {"sms": "granted", "email": "revoked"},
        "consent_updated": "2026-12-02T09:00:00Z",
    }
    store.merge_many(updates(late), now=NOW)
    c = stored(redis_conn)
    assert c.consent[Channel.SMS] is ConsentStatus.REVOKED
    assert c.consent[Channel.EMAIL] is ConsentStatus.REVOKED
    assert c.consent_updated == datetime(2026, 12, 2, 10, tzinfo=UTC)
    # other fields by the update's time
    store.merge_many(
        updates(
            {"subscriber_id": "s1", "value_tier": "bronze", "updated_at": "2026-11-01T00:00:00Z"}
        ),
        now=NOW,
    )
    assert stored(redis_conn).value_tier == "gold"
    store.merge_many(
        updates(
            {"subscriber_id": "s1", "value_tier": "silver", "updated_at": "2026-12-03T00:00:00Z"}
        ),
        now=NOW,
    )
    assert stored(redis_conn).value_tier == "silver"


def test_an_unknown_customer_patched_has_no_consent(redis_conn):
    ContextStore(redis_conn).merge_many(
        updates({"subscriber_id": "s9", "open_tickets": 1}), now=NOW
    )
    c = stored(redis_conn, "s9")
    assert c.open_tickets == 1 and c.consent == {} and not c.may_contact(Channel.SMS)


class _Producer:
    def __init__(self):
        self.sent: list[bytes] = []

    def produce(self, topic, value=None, key=None, **kwargs):
        self.sent.append(value)

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=None):
        return 0


def test_updates_during_a_redis_outage_are_dead_lettered_raw_and_applied_when_it_is_back():
    server = EmbeddedRedis(persist=True).start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        store = ContextStore(client)
        dlq = _Producer()
        sink = _CustomerPartition(store, dlq, "cx.dead-letters")  # type: ignore[arg-type]
        sink.write_batch(updates(new_yorker()))
        server.halt()
        revoke = {
            "subscriber_id": "s1",
            "consent": {"sms": "revoked"},
            "consent_updated": "2026-12-02T00:00:00Z",
        }
        sink.write_batch(updates(revoke))
        (dead,) = [orjson.loads(v) for v in dlq.sent]
        assert dead["reason"] == "redis_unavailable" and dead["kind"] == "customer"
        assert orjson.loads(base64.b64decode(dead["raw_b64"])) == revoke  # its own bytes
        assert dead["offset"] == 0
        server.start()
        sink.write_batch(updates({"subscriber_id": "s2", "open_tickets": 1}))
        c = stored(redis.Redis.from_url(server.url))
        assert c.consent[Channel.SMS] is ConsentStatus.REVOKED  # applied once Redis was back
        assert c.timezone == "America/New_York"
    finally:
        server.stop()
