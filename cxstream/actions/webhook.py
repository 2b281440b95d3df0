"""Deliver actions to a marketing/CRM system as signed CloudEvents over HTTP.

Each action is a CloudEvents 1.0 structured-mode JSON envelope (``application/cloudevents+json``)
whose ``id`` is the action's idempotency key, signed per Standard Webhooks (``webhook-id`` is the same
key, so a receiver deduplicates on it). Timeouts, connection errors and 5xx are retried with
exponential backoff and jitter; ``429`` honours ``Retry-After``; other 4xx are final. A key marked in
the delivery ledger is never sent again, so a replay after a restart does not contact anyone twice.

Just before its first POST, a delivery also marks the key as *being sent* by this process. If the
process dies with the POST in flight, nobody can know whether the receiver got it; the resumed run
finds the mark left by a run that is gone and, by default (``resend_unknown=True``), sends it
again with the same ``webhook-id``: a receiver that deduplicates on it, as Standard Webhooks asks,
contacts the customer once, and no action is left unresolved. ``resend_unknown=False`` is the
at-most-once choice, for receivers that do not deduplicate: the action is not sent again and goes to
the dead-letter topic as ``outcome unknown``, its final state (an operator can check and replay it).

The ledger being unavailable (Redis down) is not a failed delivery. Before a POST the delivery
*waits* for it (:class:`DeliveryPool` retries it, up to ``ledger_wait_s``), because sending without
the marks could contact a customer twice after a restart; after a POST answered 2xx the delivery
counts as delivered and its mark is kept in memory and written when Redis is back.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Literal, NamedTuple

import httpx
import orjson
import redis

from cxstream.actions.signing import sign_headers
from cxstream.actions.store import ClaimStore
from cxstream.actions.tmf import communication_message
from cxstream.events import Action

__all__ = [
    "MAX_UNRECORDED",
    "CircuitBreaker",
    "Delivery",
    "DeliveryOutcome",
    "DeliveryPool",
    "WebhookSender",
    "cloudevent",
]

log = logging.getLogger(__name__)

DeliveryOutcome = Literal["delivered", "already_delivered", "failed", "unknown", "waiting"]
"""``unknown``: a run that stopped was sending it, and it is not sent again (at-most-once, see the
module doc); ``waiting``: the ledger cannot be read or written, nothing was sent, try again later."""

MAX_UNRECORDED = 100_000
"""Delivery marks kept in memory while the ledger is unavailable, at most."""

RUN_ID = uuid.uuid4().hex
"""This process's mark on the deliveries it is sending."""


class Delivery(NamedTuple):
    """How one delivery ended: outcome, attempts made, and the last error if it failed."""

    outcome: DeliveryOutcome
    attempts: int
    error: str | None = None


def cloudevent(action: Action, *, source: str = "urn:cxstream") -> bytes:
    """The CloudEvents 1.0 structured JSON envelope of one action; ``data`` is a TMF681
    ``CommunicationMessage``.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Action(action_id="a1", kind="proactive_apology", subscriber_id="s1", channel="sms",
    ...            reason="degradation", alert_id="x", event_time=t, created_at=t)
    >>> event = orjson.loads(cloudevent(a))
    >>> event["type"], event["data"]["messageType"]
    ('com.cxstream.action.proactive_apology', 'SMS')
    """
    envelope = {
        "specversion": "1.0",
        "id": action.action_id,
        "source": source,
        "type": f"com.cxstream.action.{action.kind}",
        "subject": action.subscriber_id,
        "time": action.created_at.isoformat(),
        "datacontenttype": "application/json",
        "dataschema": "https://www.tmforum.org/oda/open-apis/TMF681",
        "data": communication_message(action),
    }
    return orjson.dumps(envelope)


class WebhookSender:
    """Sign and POST actions with bounded retries.

    Parameters
    ----------
    url, secret
        Endpoint and Standard Webhooks secret.
    ledger
        Where delivered idempotency keys are recorded (``None``: no cross-restart protection).
    resend_unknown
        Send again, with the same ``webhook-id``, an action whose POST was in flight when an earlier
        run died (the default); ``False`` dead-letters it as ``unknown`` instead, so no receiver
        ever sees it twice (at most once).
    client
        An ``httpx.Client`` to use (the test seam); one is created otherwise.
    run_id
        The mark this sender leaves on deliveries in progress (default: one per process).
    previous_secret
        During a secret rotation, the secret being retired: every message is signed with both.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float = 2.0,
        max_attempts: int = 3,
        backoff_s: float = 0.2,
        breaker: CircuitBreaker | None = None,
        ledger: ClaimStore | None = None,
        ledger_prefix: str = "cx",
        ledger_ttl_s: int = 7 * 86_400,
        resend_unknown: bool = True,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        run_id: str = RUN_ID,
        previous_secret: str | None = None,
    ) -> None:
        self.url = url
        self._secret = secret
        self._previous_secret = previous_secret
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._ledger = ledger
        self._ledger_prefix = ledger_prefix
        self._ledger_ttl_s = ledger_ttl_s
        self.resend_unknown = resend_unknown
        self._run_id = run_id
        self._client = client or httpx.Client(timeout=timeout_s)
        self._sleep = sleep
        self.breaker = breaker
        # delivered ids whose ledger mark could not be written yet (Redis down), oldest first
        self._unrecorded: dict[str, None] = {}
        self._unrecorded_lock = threading.Lock()

    @property
    def unrecorded(self) -> int:
        """Deliveries made whose ledger mark waits for Redis."""
        return len(self._unrecorded)

    def flush_unrecorded(self) -> bool:
        """Write the ledger marks kept in memory; True when none is left waiting."""
        if self._ledger is None or not self._unrecorded:
            return True
        with self._unrecorded_lock:
            ids = list(self._unrecorded)
        try:
            self._ledger.claim_many(
                [(self._delivered_key(i), "1") for i in ids], self._ledger_ttl_s
            )
        except redis.RedisError:
            return False
        with self._unrecorded_lock:
            for i in ids:
                self._unrecorded.pop(i, None)
        log.info("%d delivery marks written now that the ledger is back", len(ids))
        return not self._unrecorded

    def _delivered_key(self, action_id: str) -> str:
        return f"{self._ledger_prefix}:delivered:{action_id}"

    def _mark_sending(self, action: Action) -> Delivery | None:
        """Mark the action as being sent by this run; a :class:`Delivery` if it must not be sent."""
        if self._ledger is None:
            return None
        key = f"{self._ledger_prefix}:sending:{action.action_id}"
        holder = self._ledger.claim_many([(key, self._run_id)], self._ledger_ttl_s)[0]
        if holder is None:
            return None
        if holder == self._run_id:  # the same action queued twice in this run (resume + replay)
            return Delivery("already_delivered", 0)
        if self.resend_unknown:
            return None
        return Delivery(
            "unknown",
            0,
            "outcome unknown: a run that stopped was sending it; not sent again so the customer "
            "is not contacted twice (webhook.resend_unknown)",
        )

    def deliver(self, action: Action) -> Delivery:
        """POST one action with bounded retries (safe to call from several threads)."""
        if action.action_id in self._unrecorded:
            return Delivery("already_delivered", 0)
        if self._ledger is not None:
            self.flush_unrecorded()
            try:
                if self._ledger.exists_many([self._delivered_key(action.action_id)])[0]:
                    return Delivery("already_delivered", 0)
            except redis.RedisError as exc:
                return Delivery("waiting", 0, f"delivery ledger unavailable: {exc}")
        body = cloudevent(action)
        error: str | None = None
        for attempt in range(1, self.max_attempts + 1):
            if self.breaker is not None and not self.breaker.allow():
                return Delivery(
                    "failed", attempt - 1, "circuit open: the endpoint failed repeatedly"
                )
            if attempt == 1:
                try:
                    refused = self._mark_sending(action)
                except redis.RedisError as exc:
                    return Delivery("waiting", 0, f"delivery ledger unavailable: {exc}")
                if refused is not None:
                    return refused
            headers = sign_headers(
                self._secret, action.action_id, body, previous=self._previous_secret
            )
            headers["content-type"] = "application/cloudevents+json"
            retry_after: float | None = None
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
                if self.breaker is not None:
                    self.breaker.record(False)
            else:
                if self.breaker is not None:
                    self.breaker.record(response.status_code < 500 and response.status_code != 429)
                if response.is_success:
                    self._record_delivered(action)
                    return Delivery("delivered", attempt)
                error = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    retry_after = _retry_after(response.headers.get("retry-after"))
                elif response.status_code < 500:
                    return Delivery("failed", attempt, error)
            if attempt < self.max_attempts:
                delay = self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
                self._sleep(retry_after if retry_after is not None else delay)
        return Delivery("failed", self.max_attempts, error)

    def _record_delivered(self, action: Action) -> None:
        if self._ledger is None:
            return
        try:
            self._ledger.claim_many(
                [(self._delivered_key(action.action_id), "1")], self._ledger_ttl_s
            )
        except redis.RedisError as exc:
            with self._unrecorded_lock:
                self._unrecorded[action.action_id] = None
                while len(self._unrecorded) > MAX_UNRECORDED:  # bounded: the oldest go first
                    self._unrecorded.pop(next(iter(self._unrecorded)))
            log.warning(
                "delivered, but the delivery ledger is unavailable: the mark is kept in memory "
                "(%d waiting): %s",
                len(self._unrecorded),
                exc,
            )

    def close(self) -> None:
        """Write what marks it can, and close the HTTP client."""
        self.flush_unrecorded()
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return None


class CircuitBreaker:
    """Stop calling an endpoint after ``failures`` failures in a row; try again after ``reset_s``.

    >>> t = [0.0]
    >>> cb = CircuitBreaker(failures=2, reset_s=10, clock=lambda: t[0])
    >>> cb.record(False); cb.record(False); cb.allow()
    False
    >>> t[0] = 11; cb.allow(), cb.allow()  # half-open: one trial call
    (True, False)
    >>> cb.record(True); cb.allow()
    True
    """

    def __init__(
        self, failures: int = 5, reset_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def open(self) -> bool:
        """Whether calls are currently refused."""
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether a call may be made now."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at >= self.reset_s and not self._trial:
                self._trial = True  # half-open: exactly one trial until it reports back
                return True
            return False

    def record(self, success: bool) -> None:
        """Report the result of a call."""
        with self._lock:
            self._trial = False
            if success:
                self._count = 0
                self._opened_at = None
                return
            self._count += 1
            if self._count >= self.failures:
                if self._opened_at is None:
                    log.warning("webhook circuit opened after %d failures in a row", self._count)
                self._opened_at = self._clock()


Report = Callable[[Action, DeliveryOutcome, int, str | None], None]


class DeliveryPool:
    """Deliver off the caller's thread: a bounded queue served by ``concurrency`` threads.

    :meth:`submit` never blocks: it returns False when the queue is full, and the caller
    dead-letters the action. Each finished delivery is reported through ``report``. A delivery
    that must wait for the ledger is tried again every ``retry_s`` for up to ``wait_s``, then
    reported ``failed`` with the reason; while it waits, the actions behind it wait too.
    """

    def __init__(
        self,
        sender: WebhookSender,
        report: Report,
        *,
        concurrency: int = 4,
        queue_size: int = 10_000,
        wait_s: float = 600.0,
        retry_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self._report = report
        self._wait_s = wait_s
        self._retry_s = retry_s
        self._sleep = sleep
        self._clock = clock
        self._queue: queue.Queue[Action | None] = queue.Queue(maxsize=queue_size)
        self._threads = [
            threading.Thread(target=self._work, name=f"webhook-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, action: Action) -> bool:
        """Queue one action; False if the queue is full."""
        try:
            self._queue.put_nowait(action)
        except queue.Full:
            return False
        return True

    @property
    def pending(self) -> int:
        """Actions waiting for a worker."""
        return self._queue.qsize()

    def _work(self) -> None:
        while True:
            try:
                action = self._queue.get(timeout=self._retry_s)
            except queue.Empty:  # idle: write the marks that waited for the ledger
                self.sender.flush_unrecorded()
                continue
            if action is None:
                return
            self._report(action, *self._deliver(action))

    def _deliver(self, action: Action) -> Delivery:
        started = self._clock()
        while True:
            try:
                result = self.sender.deliver(action)
            except Exception as exc:  # a bug must not kill the worker; the action is dead-lettered
                log.exception("webhook delivery crashed")
                return Delivery("failed", 0, f"{type(exc).__name__}: {exc}")
            if result.outcome != "waiting":
                return result
            if self._clock() - started >= self._wait_s:
                return Delivery(
                    "failed", result.attempts, f"{result.error} for {self._wait_s:.0f} s: not sent"
                )
            self._sleep(self._retry_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish what is queued (up to ``timeout_s``), then stop the workers."""
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.sender.close()
