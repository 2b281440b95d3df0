"""Erasure on a real Redis: after ``erase_customer``, no key, member or value names the
customer, and every other customer's data is untouched (one whose id starts with theirs too)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import redis

from cxstream.actions.ledger import DeferredQueue, ExperimentLedger, RedisLedger
from cxstream.actions.policy import ContactPolicy
from cxstream.actions.receiver import WebhookReceiver
from cxstream.actions.retries import RedisRetryStore, retry_key
from cxstream.actions.rules import DEFAULT_POLICY, PolicySource
from cxstream.actions.store import RedisClaimStore
from cxstream.actions.webhook import WebhookSender
from cxstream.churn_state import RedisChurnState
from cxstream.context import ContextStore
from cxstream.devtools.flowprocess import FlowProcess
from cxstream.erasure import erase_customer
from cxstream.events import Channel, ConsentStatus, CustomerContext, ValueTier
from cxstream.settings import Settings
from cxstream.steps.churn_risk import ChurnRisk
from cxstream.steps.common import RedisTrouble
from cxstream.steps.decide import Decide
from tests.faults.conftest import SECRET, daytime_policy, ended, outage_stream, wait_until
from tests.integration.kafka_helpers import produce
from tests.unit.steps.test_steps import candidate

pytestmark = pytest.mark.integration

NOON = datetime(2026, 5, 4, 12, tzinfo=UTC)
NIGHT = datetime(2026, 5, 5, 8, tzinfo=UTC)
PREFIX = "cxe"
AUDIT = f"{PREFIX}:audit"


def customer(sub: str) -> CustomerContext:
    return CustomerContext(
        subscriber_id=sub,
        account_id="acct-1",  # one household: shared caps
        timezone="UTC",
        value_tier=ValueTier.GOLD,
        monthly_charge=90,
        tenure_months=2,
        consent={c: ConsentStatus.GRANTED for c in Channel},
    )


def names(sid: str):
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(sid)}(?![A-Za-z0-9])").search


def contents(client, prefix: str = PREFIX) -> dict[str, list[str]]:
    """Every key under ``prefix`` and what it holds (members, fields and values), as text."""
    out = {}
    for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode()
        kind = client.type(raw).decode()
        if kind == "string":
            held = [client.get(raw).decode("utf-8", "replace")]
        elif kind == "set":
            held = sorted(m.decode() for m in client.smembers(raw))
        elif kind == "zset":
            held = [m.decode() for m in client.zrange(raw, 0, -1)]
        elif kind == "hash":
            held = sorted(f"{k.decode()}={v.decode()}" for k, v in client.hgetall(raw).items())
        else:
            held = [m.decode() for m in client.lrange(raw, 0, -1)]
        out[key] = held
    return out


def everything(client, prefix: str = PREFIX) -> list[str]:
    """Every key under ``prefix``, its members and values, as text."""
    return [t for key, held in contents(client, prefix).items() for t in (key, *held)]


def populate(client, subscribers):
    """What the flow writes about customers who were degraded, scored, contacted (one deferred
    by quiet hours, one delivered), and audited."""
    store = ContextStore(client, prefix=PREFIX)
    store.put_many([customer(s) for s in subscribers])
    store.append_history(
        [(s, NOON.timestamp(), 40.0) for s in subscribers], keep=10, recent_keep=10
    )
    store.audit([f"{s}/e{i}" for s in subscribers for i in range(5)], AUDIT, 600)
    policy = ContactPolicy(
        PolicySource(
            None,
            default=DEFAULT_POLICY.model_copy(
                update={"holdout": DEFAULT_POLICY.holdout.model_copy(update={"share": 0.0})}
            ),
        ),
        RedisLedger(client),
        key_prefix=PREFIX,
        experiment=ExperimentLedger(client, prefix=PREFIX),
    )
    settings = Settings()
    churn = ChurnRisk(settings, RedisChurnState(client, prefix=PREFIX), trouble=RedisTrouble())
    deferred = DeferredQueue(client, key=f"{PREFIX}:deferred")
    decide = Decide(store, policy, deferred, churn, clock=lambda: NOON, trouble=RedisTrouble())
    sent = decide.decide_batch([candidate(customer(s)) for s in subscribers])
    assert {d.result for d in sent} == {"sent"}
    for d in sent:  # each also waits for quiet hours to end (as a deferred one does)
        deferred.push(
            NIGHT.timestamp(), d.action.model_copy(update={"action_id": f"{d.action.action_id}-n"})
        )
    claims = RedisClaimStore(client)
    for d in sent:
        claims.claim_many([(f"{PREFIX}:sending:{d.action.action_id}", "run")], 600)
        claims.claim_many([(f"{PREFIX}:delivered:{d.action.action_id}", "1")], 600)
        # and waits for its next delivery round (the endpoint was down)
        RedisRetryStore(client, retry_key(PREFIX, "webhook-0")).put(d.action, 1, NIGHT.timestamp())
    policy.experiment.assign(subscribers[0], "treated", sent[0].action)
    # an outcome of the first was learned (its snapshot kept as learned), and it was scored since
    (snapshot,) = churn.state.get_snapshots(subscribers[:1])
    assert snapshot is not None
    learned = {**snapshot, "outcome": f"churned@{NOON.isoformat()}", "revision": 1}
    churn.state.mark_learned([(subscribers[0], learned)])
    churn.state.save_snapshots([(subscribers[0], snapshot)])


def test_erase_removes_every_key_and_entry_that_names_the_customer(redis_conn):
    populate(redis_conn, ["s1", "s10", "s2"])
    before = contents(redis_conn)
    assert any(names("s1")(t) for key, held in before.items() for t in (key, *held))
    untouched = {
        key: held for key, held in before.items() if not any(names("s1")(t) for t in (key, *held))
    }

    report = erase_customer(
        redis_conn, "s1", prefix=PREFIX, audit_key=AUDIT, deferred_key=f"{PREFIX}:deferred"
    )

    after = everything(redis_conn)
    assert [t for t in after if names("s1")(t)] == []
    assert report.redis_keys_deleted >= 9  # profile, history, snapshot, experiment, index,
    # cooldowns, caps, ledger marks
    assert report.audit_entries_deleted == 5
    assert report.members_removed >= 3  # household caps, the deferred action, its waiting round
    # the others are untouched (s10 too, whose id starts with s1)
    now = contents(redis_conn)
    assert {key: now.get(key) for key in untouched} == untouched
    assert any(names("s10")(t) for t in after)
    assert redis_conn.scard(AUDIT) == 10
    again = erase_customer(
        redis_conn, "s1", prefix=PREFIX, audit_key=AUDIT, deferred_key=f"{PREFIX}:deferred"
    )
    assert (again.redis_keys_deleted, again.audit_entries_deleted, again.members_removed) == (
        0,
        0,
        0,
    )


def test_after_an_erasure_the_sender_finds_no_ledger_mark(redis_conn):
    """The delivery ledger of an erased customer's actions goes with them (their ids are in the
    customer's action index)."""
    populate(redis_conn, ["s3"])
    marks = list(redis_conn.scan_iter(f"{PREFIX}:delivered:*"))
    assert marks
    erase_customer(redis_conn, "s3", prefix=PREFIX)
    assert list(redis_conn.scan_iter(f"{PREFIX}:delivered:*")) == []
    assert WebhookSender  # (the sender reads these marks: see tests/unit/actions/test_webhook.py)


@pytest.mark.slow
def test_cxstream_erase_on_a_degraded_contacted_and_scored_customer(live_settings, tmp_path):
    """The flow runs a cell outage (its customers degrade, are scored and get a notice); then
    ``cxstream erase`` removes one of them: no Redis key or audit entry names them, the running
    flow and its dashboard drop them."""
    audit = f"{live_settings.redis.key_prefix}:audit"
    settings = live_settings.model_copy(
        update={
            "flow": live_settings.flow.model_copy(update={"audit_key": audit}),
            "policy": live_settings.policy.model_copy(
                update={"file": str(daytime_policy(tmp_path))}
            ),
        }
    )
    _, _, records = outage_stream(settings, 91, 15_000, outage_s=(5, 25))
    produce(settings, settings.kafka.topics.qos, records)
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    prefix = settings.redis.key_prefix
    with WebhookReceiver(SECRET) as receiver:
        live = settings.model_copy(
            update={"webhook": settings.webhook.model_copy(update={"url": receiver.url})}
        )
        flow = FlowProcess(live, tmp_path, SECRET)
        try:
            flow.wait_ready()
            wait_until(lambda: ended(flow.counters()) >= len(records), 120, "every event")

            def victim():
                for action in receiver.delivered.values():
                    sid = action["subject"]
                    if client.exists(f"{prefix}:churn:snap:{sid}"):
                        return sid
                return None

            sid = wait_until(victim, 60, "a customer degraded, scored and contacted")
            dashboard = httpx.Client(base_url=flow.dashboard_url, timeout=10)
            wait_until(
                lambda: dashboard.get(f"api/customers/{sid}").json()["decisions"],
                30,
                "the dashboard to show the customer",
            )
            assert client.sscan(audit, match=f"{sid}/*", count=100_000)[1]
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cxstream",
                    "erase",
                    "--customer",
                    sid,
                    "--config",
                    str(tmp_path / "cxstream.yaml"),
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=120,
                env={  # the flow's own configuration, as an operator would use it
                    **os.environ,
                    "CXSTREAM_REDIS__URL": settings.redis.url.get_secret_value(),
                    "CXSTREAM_WEBHOOK__SECRET": SECRET,
                    "CXSTREAM_WEBHOOK__ALLOW_HTTP": "true",
                },
                check=False,
            )
            assert result.returncode == 0, result.stderr[-2000:]
            report = orjson.loads(result.stdout.strip().splitlines()[-1])
            assert set(report) == {
                "customer",
                "redis_keys_deleted",
                "audit_entries_deleted",
                "tombstones",
            }
            assert report["customer"] == sid and report["tombstones"] == 1
            assert report["redis_keys_deleted"] >= 4  # profile, history, snapshot, ledger, ...
            assert report["audit_entries_deleted"] > 0

            def forgotten():
                page = dashboard.get(f"api/customers/{sid}")
                overview = dashboard.get("api/overview").text
                listed = dashboard.get("api/customers", params={"q": sid}).json()
                return (
                    page.status_code == 404  # unknown: no profile, nothing seen about them
                    and not names(sid)(overview)
                    and not listed["results"]
                )

            wait_until(forgotten, 30, "the dashboard to drop the customer")
            wait_until(
                lambda: (
                    flow.counters().get("cxstream_customer_updates_total{outcome=erased}", 0) >= 1
                ),
                30,
                "the flow to read the tombstone",
            )
        finally:
            flow.stop()
    leftovers = [t for t in everything(client, prefix) if names(sid)(t)]
    assert leftovers == []
