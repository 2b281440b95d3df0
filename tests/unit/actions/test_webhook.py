from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import redis

from cxstream.actions.signing import SignatureError, verify
from cxstream.actions.store import MemoryClaimStore
from cxstream.actions.webhook import CircuitBreaker, DeliveryPool, WebhookSender, cloudevent
from cxstream.events import Action

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
T = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


def action(n=1):
    return Action(
        action_id=f"deg-s1-{n}:proactive_apology",
        kind="proactive_apology",
        subscriber_id="s1",
        channel="sms",
        reason="degradation",
        alert_id=f"deg-s1-{n}",
        event_time=T,
        created_at=T,
    )


class Endpoint:
    """An httpx MockTransport handler that answers from a script and records requests."""

    def __init__(self, *statuses, headers=None):
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 200
        if status == "timeout":
            raise httpx.ConnectTimeout("timed out", request=request)
        return httpx.Response(status, headers=self.headers)


def sender(endpoint, **kw):
    sleeps = []
    s = WebhookSender(
        "http://crm.test/hooks",
        SECRET,
        client=httpx.Client(transport=httpx.MockTransport(endpoint)),
        sleep=sleeps.append,
        backoff_s=0.1,
        **kw,
    )
    return s, sleeps


def test_cloudevent_envelope():
    envelope = orjson.loads(cloudevent(action()))
    assert envelope["specversion"] == "1.0"
    assert envelope["id"] == "deg-s1-1:proactive_apology"
    assert envelope["subject"] == "s1"
    message = envelope["data"]  # a TMF681 CommunicationMessage
    assert message["@type"] == "CommunicationMessage"
    assert message["messageType"] == "SMS"
    assert message["receiver"] == [{"id": "s1", "@type": "Receiver"}]
    characteristics = {c["name"]: c["value"] for c in message["characteristic"]}
    assert characteristics["actionKind"] == "proactive_apology"


def test_retries_5xx_and_timeouts_with_growing_backoff_then_delivers_signed():
    endpoint = Endpoint(503, "timeout", 200)
    s, sleeps = sender(endpoint, max_attempts=3)
    assert s.deliver(action())[:2] == ("delivered", 3)
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.15 and 0.1 <= sleeps[1] <= 0.3
    for request in endpoint.requests:
        verify(SECRET, request.headers, request.content)
        assert request.headers["webhook-id"] == "deg-s1-1:proactive_apology"
        assert request.headers["content-type"] == "application/cloudevents+json"


def test_429_honours_retry_after():
    s, sleeps = sender(Endpoint(429, 200, headers={"retry-after": "7"}))
    assert s.deliver(action())[:2] == ("delivered", 2)
    assert sleeps == [7.0]


def test_4xx_is_final_and_last_error_kept():
    s, sleeps = sender(Endpoint(400))
    assert s.deliver(action())[:3] == ("failed", 1, "HTTP 400")
    assert sleeps == []


def test_gives_up_after_max_attempts():
    s, _ = sender(Endpoint(500, 500, 500, 500), max_attempts=3)
    assert s.deliver(action())[:3] == ("failed", 3, "HTTP 500")


def test_ledger_prevents_a_second_delivery_after_restart():
    ledger = MemoryClaimStore()
    endpoint = Endpoint()
    first, _ = sender(endpoint, ledger=ledger)
    assert first.deliver(action())[0] == "delivered"
    restarted, _ = sender(endpoint, ledger=ledger)
    assert restarted.deliver(action())[:3] == ("already_delivered", 0, None)
    assert len(endpoint.requests) == 1


@pytest.mark.parametrize("value", [None, "soon", "-3"])
def test_bad_retry_after_falls_back_to_backoff(value):
    headers = {} if value is None else {"retry-after": value}
    s, sleeps = sender(Endpoint(429, 200, headers=headers))
    assert s.deliver(action())[0] == "delivered"
    assert 0 <= sleeps[0] <= 60


def test_circuit_breaker_stops_calling_a_failing_endpoint():
    endpoint = Endpoint(*([500] * 20))
    t = [0.0]
    breaker = CircuitBreaker(failures=3, reset_s=30, clock=lambda: t[0])
    s, _ = sender(endpoint, max_attempts=2, breaker=breaker)
    assert s.deliver(action(1))[:3] == ("failed", 2, "HTTP 500")
    result = s.deliver(action(2))
    assert result.outcome == "failed"
    assert result.error.startswith("circuit open")
    assert len(endpoint.requests) == 3  # the breaker opened after the third failure
    t[0] = 31  # half-open: one trial goes through
    endpoint.statuses = []
    assert s.deliver(action(3))[:2] == ("delivered", 1)
    assert not breaker.open


def test_delivery_pool_does_not_block_the_caller_and_reports_every_action():
    import threading

    gate = threading.Event()

    def slow(request):
        gate.wait(5)
        return httpx.Response(200)

    reports = []
    done = threading.Event()

    def report(a, outcome, attempts, error):
        reports.append((a.action_id, outcome))
        if len(reports) == 3:
            done.set()

    s = WebhookSender(
        "http://crm.test/hooks", SECRET, client=httpx.Client(transport=httpx.MockTransport(slow))
    )
    pool = DeliveryPool(s, report, concurrency=1, queue_size=2)
    assert pool.submit(action(1))  # taken by the worker, which now hangs
    import time

    time.sleep(0.1)
    assert pool.submit(action(2))
    assert pool.submit(action(3))
    assert not pool.submit(action(4))  # queue full: refused at once, never blocks
    gate.set()
    assert done.wait(5)
    pool.close()
    assert sorted(reports) == [(action(i).action_id, "delivered") for i in (1, 2, 3)]


def test_at_most_once_a_post_in_flight_when_the_previous_run_died_is_not_sent_again():
    ledger = MemoryClaimStore()
    endpoint = Endpoint("timeout")  # the first run's POST may or may not have arrived
    dying, _ = sender(endpoint, ledger=ledger, max_attempts=1, run_id="run-1")
    assert dying.deliver(action())[0] == "failed"  # the run "dies" before recording anything
    resumed, _ = sender(endpoint, ledger=ledger, run_id="run-2", resend_unknown=False)
    outcome, attempts, error = resumed.deliver(action())[:3]
    assert (outcome, attempts) == ("unknown", 0)
    assert "outcome unknown" in error
    assert len(endpoint.requests) == 1  # the receiver never sees the id twice


def test_by_default_a_post_in_flight_when_the_run_died_is_sent_again_with_the_same_id():
    ledger = MemoryClaimStore()
    endpoint = Endpoint("timeout", 200)
    dying, _ = sender(endpoint, ledger=ledger, max_attempts=1, run_id="run-1")
    dying.deliver(action())
    resumed, _ = sender(endpoint, ledger=ledger, run_id="run-2")
    assert resumed.deliver(action())[0] == "delivered"
    assert [r.headers["webhook-id"] for r in endpoint.requests] == [action().action_id] * 2


def test_the_same_action_queued_twice_in_one_run_is_posted_once():
    ledger = MemoryClaimStore()
    endpoint = Endpoint()
    s, _ = sender(endpoint, ledger=ledger, run_id="run-1")
    ledger.claim_many([(f"cx:sending:{action().action_id}", "run-1")], 60)  # another thread has it
    assert s.deliver(action())[:3] == ("already_delivered", 0, None)
    assert endpoint.requests == []


def test_no_mark_is_left_when_the_breaker_refuses_before_any_post():
    ledger = MemoryClaimStore()
    t = [0.0]
    breaker = CircuitBreaker(failures=1, reset_s=30, clock=lambda: t[0])
    breaker.record(False)
    s, _ = sender(Endpoint(), ledger=ledger, breaker=breaker, run_id="run-1")
    assert s.deliver(action())[0] == "failed"
    assert ledger.exists_many([f"cx:sending:{action().action_id}"]) == [False]


class FlakyLedger(MemoryClaimStore):
    """A claim store that raises like Redis while ``down``; ``down_after`` claims let calls through
    first (to fail between the sending mark and the delivered mark)."""

    def __init__(self):
        super().__init__()
        self.down = False
        self.down_after: int | None = None

    def _check(self):
        if self.down_after is not None:
            if self.down_after == 0:
                self.down = True
                self.down_after = None
            else:
                self.down_after -= 1
        if self.down:
            raise redis.ConnectionError("Connection refused")

    def claim_many(self, claims, ttl_s):
        self._check()
        return super().claim_many(claims, ttl_s)

    def exists_many(self, keys):
        self._check()
        return super().exists_many(keys)


def test_with_the_ledger_down_nothing_is_sent_and_the_delivery_waits():
    ledger = FlakyLedger()
    ledger.down = True
    endpoint = Endpoint()
    s, _ = sender(endpoint, ledger=ledger)
    outcome, attempts, error = s.deliver(action())[:3]
    assert (outcome, attempts) == ("waiting", 0)
    assert "ledger unavailable" in error
    assert endpoint.requests == []


def test_a_2xx_with_the_ledger_down_is_delivered_and_recorded_when_redis_is_back():
    ledger = FlakyLedger()
    ledger.down_after = 2  # the delivered check and the sending mark pass, then Redis goes
    endpoint = Endpoint()
    s, _ = sender(endpoint, ledger=ledger)
    assert s.deliver(action())[:2] == ("delivered", 1)  # not "failed": the receiver has it
    assert s.unrecorded == 1
    assert s.deliver(action())[:3] == ("already_delivered", 0, None)  # remembered meanwhile
    assert not s.flush_unrecorded()
    ledger.down = False
    assert s.flush_unrecorded()
    assert s.unrecorded == 0
    restarted, _ = sender(endpoint, ledger=ledger, run_id="another")
    assert restarted.deliver(action())[:3] == ("already_delivered", 0, None)
    assert len(endpoint.requests) == 1


def _pool_run(ledger, endpoint, *, wait_s, up_after_sleeps=None):
    reports = []
    done = threading.Event()
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if up_after_sleeps is not None and len(sleeps) >= up_after_sleeps:
            ledger.down = False

    def report(a, outcome, attempts, error):
        reports.append((outcome, error))
        done.set()

    s, _ = sender(endpoint, ledger=ledger)
    clock = iter(float(i) for i in range(10_000))
    pool = DeliveryPool(
        s, report, concurrency=1, wait_s=wait_s, retry_s=1.0, sleep=sleep, clock=lambda: next(clock)
    )
    assert pool.submit(action())
    assert done.wait(5)
    pool.close()
    return reports, sleeps


def test_a_queued_action_waits_for_the_ledger_and_is_delivered_when_it_returns():
    ledger = FlakyLedger()
    ledger.down = True
    endpoint = Endpoint()
    reports, sleeps = _pool_run(ledger, endpoint, wait_s=600, up_after_sleeps=5)
    assert reports == [("delivered", None)]
    assert len(sleeps) == 5
    assert len(endpoint.requests) == 1


def test_a_delivery_that_waited_too_long_for_the_ledger_is_dead_lettered_with_the_reason():
    ledger = FlakyLedger()
    ledger.down = True
    endpoint = Endpoint()
    reports, _ = _pool_run(ledger, endpoint, wait_s=10)
    [(outcome, error)] = reports
    assert outcome == "failed"
    assert "ledger unavailable" in error and "not sent" in error
    assert endpoint.requests == []


class Receiver:
    """A receiver that may deduplicate on webhook-id: which ids it acted on, and how often."""

    def __init__(self):
        self.posts = []

    def __call__(self, request):
        self.posts.append(request.headers["webhook-id"])
        return httpx.Response(200)


@pytest.mark.parametrize("crash", ["after_mark", "after_post", "after_record"])
@pytest.mark.parametrize("resend_unknown", [True, False])
def test_a_crash_at_each_point_of_a_delivery_resolves_the_action(crash, resend_unknown):
    """The process dies after the sending mark (before the POST), after the POST (before its
    mark), or after everything; the next run resolves the action either way."""
    ledger = MemoryClaimStore()
    receiver = Receiver()
    first, _ = sender(receiver, ledger=ledger, run_id="run-1", resend_unknown=resend_unknown)
    key = action().action_id
    if crash == "after_mark":
        ledger.claim_many([(f"cx:sending:{key}", "run-1")], 60)
    elif crash == "after_post":
        ledger.claim_many([(f"cx:sending:{key}", "run-1")], 60)
        receiver(httpx.Request("POST", "http://crm.test/hooks", headers={"webhook-id": key}))
    else:
        assert first.deliver(action())[0] == "delivered"
    resumed, _ = sender(receiver, ledger=ledger, run_id="run-2", resend_unknown=resend_unknown)
    outcome, _, error = resumed.deliver(action())[:3]
    if crash == "after_record":
        assert outcome == "already_delivered"
    elif resend_unknown:  # at least once: the receiver deduplicates on the id
        assert outcome == "delivered"
        assert set(receiver.posts) == {key}
    else:  # at most once: resolved as outcome unknown, never posted twice
        assert outcome == "unknown" and "outcome unknown" in error
    assert receiver.posts.count(key) <= (2 if resend_unknown else 1)
    assert resend_unknown is False or key in receiver.posts  # at least once


def test_during_a_secret_rotation_a_receiver_with_either_secret_verifies_every_message():
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    endpoint = Endpoint()
    s = WebhookSender(
        "http://crm.test/hooks",
        new,
        previous_secret=SECRET,
        client=httpx.Client(transport=httpx.MockTransport(endpoint)),
    )
    for n in range(3):
        assert s.deliver(action(n))[0] == "delivered"
    for request in endpoint.requests:
        verify(SECRET, request.headers, request.content)  # a receiver not moved yet
        verify(new, request.headers, request.content)  # a receiver already moved
    with pytest.raises(SignatureError):
        verify(
            "whsec_" + base64.b64encode(b"x" * 32).decode(),
            endpoint.requests[0].headers,
            endpoint.requests[0].content,
        )
