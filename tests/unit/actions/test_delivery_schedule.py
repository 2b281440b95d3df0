"""Durable delivery: rounds over hours, throttling, 410 disables; checked with the reference
Standard Webhooks verifier and the CloudEvents SDK."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import orjson
import pytest
from cloudevents.v1.http import from_http
from standardwebhooks.webhooks import Webhook

from cxstream.actions.retries import MemoryRetryStore
from cxstream.actions.store import MemoryClaimStore
from cxstream.actions.webhook import DEFAULT_SCHEDULE_S, DeliveryPool, WebhookSender
from cxstream.flows.sinks import _WebhookPartition
from tests.unit.actions.test_webhook import SECRET, action

COMPRESSION = 600.0  # ten minutes are one second here


class Receiver:
    """Down (connection refused) until ``up_at``, then answers 200; counts deliveries."""

    def __init__(self, up_at: float, status_when_down: int | None = None):
        self.up_at = up_at
        self.status_when_down = status_when_down
        self.delivered: list[str] = []
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            self.requests.append(request)
        if time.time() < self.up_at:
            if self.status_when_down is None:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(self.status_when_down)
        with self.lock:
            self.delivered.append(request.headers["webhook-id"])
        return httpx.Response(200)


def make_sender(receiver, ledger=None, **kw):
    return WebhookSender(
        "http://crm.test/hooks",
        SECRET,
        client=httpx.Client(transport=httpx.MockTransport(receiver)),
        sleep=lambda s: None,
        max_attempts=2,
        ledger=ledger,
        **kw,
    )


class Reports:
    def __init__(self, expected):
        self.items = []
        self.expected = expected
        self.done = threading.Event()

    def __call__(self, a, outcome, attempts, error):
        self.items.append((a.action_id, outcome, error))
        if len(self.items) >= self.expected:
            self.done.set()


def test_a_receiver_down_for_ten_minutes_gets_every_action_once_and_none_is_dead_lettered():
    receiver = Receiver(up_at=time.time() + 600 / COMPRESSION)
    reports = Reports(expected=20)
    scheduled = []
    pool = DeliveryPool(
        make_sender(receiver, MemoryClaimStore()),
        reports,
        schedule=[d / COMPRESSION for d in DEFAULT_SCHEDULE_S],
        on_scheduled=lambda a, r, due, err: scheduled.append((a.action_id, r)),
        retry_s=0.02,
    )
    for n in range(20):
        assert pool.submit(action(n))
    assert reports.done.wait(30)
    pool.close()
    assert {outcome for _, outcome, _ in reports.items} == {"delivered"}
    assert sorted(receiver.delivered) == sorted(action(n).action_id for n in range(20))
    assert len(receiver.delivered) == len(set(receiver.delivered))  # once per webhook-id
    assert max(r for _, r in scheduled) >= 2  # it took later rounds, not just quick retries


def test_after_the_last_round_the_action_is_dead_lettered_with_the_error():
    receiver = Receiver(up_at=float("inf"), status_when_down=503)
    reports = Reports(expected=1)
    pool = DeliveryPool(make_sender(receiver), reports, schedule=[0.01, 0.01], retry_s=0.02)
    pool.submit(action())
    assert reports.done.wait(10)
    pool.close()
    assert reports.items == [(action().action_id, "failed", "HTTP 503")]
    assert len(receiver.requests) == 2 * 3  # three rounds of two quick attempts


def test_410_disables_the_endpoint_says_so_and_a_restart_keeps_it_disabled():
    ledger = MemoryClaimStore()
    receiver = Receiver(up_at=float("inf"), status_when_down=410)
    reports = Reports(expected=3)
    disabled = []
    pool = DeliveryPool(
        make_sender(receiver, ledger), reports, on_disabled=disabled.append, concurrency=1
    )
    for n in range(3):
        pool.submit(action(n))
    assert reports.done.wait(10)
    pool.close()
    assert len(receiver.requests) == 1  # nothing more is sent to an endpoint that is gone
    assert [outcome for _, outcome, _ in reports.items] == ["failed"] * 3
    assert all("endpoint disabled" in error and "410" in error for _, _, error in reports.items)
    assert len(disabled) == 1 and "http://crm.test/hooks" in disabled[0]
    again = DeliveryPool(make_sender(receiver, ledger), Reports(1))
    assert again.disabled is not None and "delete the ledger key" in again.disabled
    again.close()


@pytest.mark.parametrize("status", [429, 502, 504])
def test_a_throttling_answer_holds_back_every_delivery_until_retry_after(status):
    calls = []

    def endpoint(request):
        calls.append(time.time())
        if len(calls) == 1:
            return httpx.Response(status, headers={"retry-after": "120"})
        return httpx.Response(200)

    scheduled = []
    pool = DeliveryPool(
        make_sender(endpoint),
        Reports(2),
        on_scheduled=lambda a, r, due, err: scheduled.append(due - time.time()),
        concurrency=1,
    )
    pool.submit(action(1))
    time.sleep(0.2)
    pool.submit(action(2))  # another action: held back too
    time.sleep(0.3)
    assert len(calls) == 1
    assert scheduled and 110 < scheduled[0] <= 120  # the endpoint's wait, not the schedule's 5 s
    assert pool.scheduled == 2
    pool.close()


def test_the_rounds_survive_a_restart_in_the_partition_snapshot():
    receiver = Receiver(up_at=float("inf"))
    part = _WebhookPartition(
        make_sender(receiver), None, "dlq", 1, 100, None, None, schedule=[3600.0, 3600.0]
    )
    part.write_batch([action(1)])
    deadline = time.time() + 5
    while not part.snapshot()[0]["round"] and time.time() < deadline:
        time.sleep(0.02)
    [item] = part.snapshot()
    assert item["round"] == 1 and item["due"] > time.time() + 3500
    part.close()
    resumed = _WebhookPartition(
        make_sender(receiver), None, "dlq", 1, 100, None, [item], schedule=[3600.0, 3600.0]
    )
    assert resumed.snapshot() == [item]  # still waiting for its round, not resent at once
    assert resumed._pool.scheduled == 1
    resumed.close()
    # a snapshot written before rounds existed (plain actions) is queued at once
    old = _WebhookPartition(
        make_sender(Receiver(up_at=0)), None, "dlq", 1, 100, None,
        [action(2).model_dump(mode="json")],
    )  # fmt: skip
    deadline = time.time() + 5
    while old.snapshot() and time.time() < deadline:
        time.sleep(0.02)
    assert old.snapshot() == []
    old.close()


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(b"n" * 32).decode(),
        "whsec_" + base64.b64encode(b"p" * 31).decode().rstrip("="),  # without its padding
        base64.b64encode(b"q" * 32).decode(),  # without the prefix
    ],
)
def test_the_reference_verifier_and_the_cloudevents_sdk_accept_every_message(secret):
    receiver = Receiver(up_at=0)
    s = WebhookSender(
        "http://crm.test/hooks",
        secret,
        previous_secret=SECRET,
        client=httpx.Client(transport=httpx.MockTransport(receiver)),
    )
    for n in range(3):
        assert s.deliver(action(n))[0] == "delivered"
    for request in receiver.requests:
        headers = dict(request.headers)
        # during the rotation a receiver with either secret verifies it
        for key in (secret, SECRET):
            payload = Webhook(key).verify(request.content, headers)
            assert payload["id"] == headers["webhook-id"]
        event = from_http(headers, request.content)
        assert event["id"] == headers["webhook-id"]
        assert event.data["@type"] == "CommunicationMessage"
        assert orjson.loads(request.content)["specversion"] == "1.0"


def test_the_waiting_rounds_survive_a_restart_without_recovery_in_the_retry_store():
    store = MemoryRetryStore()
    down = Receiver(up_at=float("inf"))
    part = _WebhookPartition(
        make_sender(down, MemoryClaimStore()), None, "dlq", 1, 100, None, None,
        schedule=[3600.0, 3600.0], retries=store,
    )  # fmt: skip
    part.write_batch([action(1), action(2)])
    deadline = time.time() + 5
    while len(store.entries) < 2 and time.time() < deadline:
        time.sleep(0.02)
    part.close()
    waiting = store.load()
    assert sorted((a.action_id, r) for a, r, _ in waiting) == [
        (action(1).action_id, 1),
        (action(2).action_id, 1),
    ]
    assert all(due > time.time() + 3500 for _, _, due in waiting)
    # a new process with no snapshot (recovery off) and the endpoint back: an hour later (the
    # rounds' due times moved to now), each waiting action is delivered once, with its own id
    for a, r, _ in waiting:
        store.put(a, r, time.time())
    up = Receiver(up_at=0)
    resumed = _WebhookPartition(
        make_sender(up, MemoryClaimStore()), None, "dlq", 1, 100, None, None,
        schedule=[3600.0, 3600.0], retries=store,
    )  # fmt: skip
    deadline = time.time() + 5
    while store.entries and time.time() < deadline:
        time.sleep(0.02)
    resumed.close()
    assert sorted(up.delivered) == sorted([action(1).action_id, action(2).action_id])
    assert store.entries == {}  # delivered: nothing left waiting
