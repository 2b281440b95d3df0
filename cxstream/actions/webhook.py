"""Deliver actions to a marketing/CRM system as signed CloudEvents over HTTP.

Each action is a CloudEvents 1.0 structured-mode JSON envelope (``application/cloudevents+json``)
whose ``id`` is the action's idempotency key, signed per Standard Webhooks (``webhook-id`` is the same
key, so a receiver deduplicates on it). Timeouts, connection errors and 5xx are retried with
exponential backoff and jitter; ``429`` honours ``Retry-After``; other 4xx are final. A key marked in
the delivery ledger is never sent again, so a replay after a restart does not contact anyone twice.

Those quick attempts are one *round*. A round that fails for a reason that may pass (a timeout, a
connection error, 5xx, 429, the circuit open) is followed by another after the next delay of
:class:`DeliveryPool`'s ``schedule`` (by default, like Svix's: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
10 h, about 27 hours in all; ``Retry-After`` when it asks for longer), so a receiver that is down
for hours loses nothing; only after the last round is the action dead-lettered. ``429``, ``502``
and ``504`` also *throttle* the endpoint: no delivery starts before its ``Retry-After`` (or the
backoff). ``410 Gone`` *disables* the endpoint, as Standard Webhooks asks: the mark is kept in the
ledger (so a restart keeps it disabled; deleting the key enables it again), and the actions are
dead-lettered with that reason until then.

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

import hashlib
import heapq
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Literal, NamedTuple

import httpx
import orjson
import redis

from cxstream import breaker
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

DeliveryOutcome = Literal["delivered", "already_delivered", "failed", "unknown", "waiting", "gone"]
"""``unknown``: a run that stopped was sending it, and it is not sent again (at-most-once, see the
module doc); ``waiting``: the ledger cannot be read or written, nothing was sent, try again later;
``gone``: the endpoint answered ``410 Gone``, it is to be disabled."""

DEFAULT_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""The delays before the rounds of delivery after the first (Svix's schedule, about 27 hours)."""

THROTTLE_STATUSES = frozenset({429, 502, 504})
"""Answers that ask the sender to slow down (Standard Webhooks)."""

MAX_UNRECORDED = 100_000
"""Delivery marks kept in memory while the ledger is unavailable, at most."""

RUN_ID = uuid.uuid4().hex
"""This process's mark on the deliveries it is sending."""


class Delivery(NamedTuple):
    """How one delivery ended: outcome, attempts made, and the last error if it failed."""

    outcome: DeliveryOutcome
    attempts: int
    error: str | None = None
    retryable: bool = False  # a failure that may pass: worth another round later
    retry_after: float | None = None  # seconds the endpoint asked to wait (Retry-After)
    status: int | None = None  # the last HTTP status, if there was an answer


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

    def _mark_sending(self, action: Action, again: bool = False) -> Delivery | None:
        """Mark the action as being sent by this run; a :class:`Delivery` if it must not be sent.
        ``again``: a later round of a delivery this run began (its own mark is expected)."""
        if self._ledger is None:
            return None
        key = f"{self._ledger_prefix}:sending:{action.action_id}"
        holder = self._ledger.claim_many([(key, self._run_id)], self._ledger_ttl_s)[0]
        if holder is None:
            return None
        if holder == self._run_id:  # the same action queued twice in this run (resume + replay)
            return None if again else Delivery("already_delivered", 0)
        if self.resend_unknown:
            return None
        return Delivery(
            "unknown",
            0,
            "outcome unknown: a run that stopped was sending it; not sent again so the customer "
            "is not contacted twice (webhook.resend_unknown)",
        )

    def deliver(self, action: Action, again: bool = False) -> Delivery:
        """POST one action with bounded retries (safe to call from several threads); ``again``
        for a later round of a delivery this run began."""
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
                    "failed",
                    attempt - 1,
                    "circuit open: the endpoint failed repeatedly",
                    retryable=True,
                )
            if attempt == 1:
                try:
                    refused = self._mark_sending(action, again)
                except redis.RedisError as exc:
                    return Delivery("waiting", 0, f"delivery ledger unavailable: {exc}")
                if refused is not None:
                    return refused
            headers = sign_headers(
                self._secret, action.action_id, body, previous=self._previous_secret
            )
            headers["content-type"] = "application/cloudevents+json"
            retry_after = None
            status = None
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
                status = response.status_code
                error = f"HTTP {status}"
                if status == 410:
                    return Delivery("gone", attempt, "HTTP 410 Gone", status=status)
                if status in THROTTLE_STATUSES:
                    retry_after = _retry_after(response.headers.get("retry-after"))
                    if retry_after is not None and retry_after > _MAX_INLINE_WAIT_S:
                        # a long wait is the next round's, not this thread's
                        return Delivery("failed", attempt, error, True, retry_after, status)
                elif status < 500:
                    return Delivery("failed", attempt, error, status=status)
            if attempt < self.max_attempts:
                delay = self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
                self._sleep(retry_after if retry_after is not None else delay)
        return Delivery("failed", self.max_attempts, error, True, retry_after, status)

    def disabled(self) -> bool:
        """Whether an earlier ``410 Gone`` disabled this endpoint (the mark in the ledger)."""
        if self._ledger is None:
            return False
        try:
            return bool(self._ledger.exists_many([self.disabled_key])[0])
        except redis.RedisError:
            return False

    def disable(self, reason: str) -> None:
        """Keep the endpoint disabled across restarts (until the ledger key is deleted)."""
        if self._ledger is None:
            return
        try:
            self._ledger.claim_many([(self.disabled_key, reason)], _DISABLED_TTL_S)
        except redis.RedisError as exc:
            log.warning("could not record that the endpoint is disabled: %s", exc)

    @property
    def disabled_key(self) -> str:
        """The ledger key that marks this endpoint disabled."""
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return f"{self._ledger_prefix}:webhook-disabled:{digest}"

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


_MAX_INLINE_WAIT_S = 60.0
"""A ``Retry-After`` up to this is waited for within a round; a longer one sets the next round."""

_DISABLED_TTL_S = 365 * 86_400


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), at most a day."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), 86_400.0)


class CircuitBreaker(breaker.CircuitBreaker):
    """Stop calling an endpoint after ``failures`` failures in a row; try again after ``reset_s``
    (:class:`cxstream.breaker.CircuitBreaker`, logging when it opens).

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
        super().__init__(failures, reset_s, clock, on_open=_log_opened)


def _log_opened(failures: int) -> None:
    log.warning("webhook circuit opened after %d failures in a row", failures)


Report = Callable[[Action, DeliveryOutcome, int, str | None], None]


class DeliveryPool:
    """Deliver off the caller's thread: a bounded queue served by ``concurrency`` threads.

    :meth:`submit` never blocks: it returns False when the queue is full, and the caller
    dead-letters the action. Each finished delivery is reported through ``report``. A delivery
    that must wait for the ledger is tried again every ``retry_s`` for up to ``wait_s``, then
    reported ``failed`` with the reason; while it waits, the actions behind it wait too.

    A round that failed for a reason that may pass is followed by the next after the next delay
    of ``schedule`` (``on_scheduled`` is told, so that the caller can keep it across restarts);
    only a failure after the last round is reported. ``429``/``502``/``504`` hold every delivery
    back until the endpoint's ``Retry-After`` (or ``throttle_s``); ``410 Gone`` disables the
    endpoint (``on_disabled`` is told once) and every action is then reported failed with that
    reason.
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
        schedule: Sequence[float] = DEFAULT_SCHEDULE_S,
        throttle_s: float = 5.0,
        on_scheduled: Callable[[Action, int, float, str | None], None] | None = None,
        on_disabled: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.sender = sender
        self._report = report
        self._wait_s = wait_s
        self._retry_s = retry_s
        self._schedule = tuple(schedule)
        self._throttle_s = throttle_s
        self._on_scheduled = on_scheduled
        self._on_disabled = on_disabled
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self._queue: queue.Queue[tuple[Action, int] | None] = queue.Queue(maxsize=queue_size)
        self._later: list[tuple[float, int, Action, int]] = []  # (due, seq, action, round)
        self._seq = 0
        self._later_lock = threading.Condition()
        self._closed = False
        self._busy = 0  # workers handling an action
        self._throttle_until = 0.0
        self.disabled: str | None = (
            "an earlier 410 Gone disabled it (delete the ledger key "
            f"{sender.disabled_key} to enable it)"
            if sender.disabled()
            else None
        )
        self._threads = [
            threading.Thread(target=self._work, name=f"webhook-{i}", daemon=True)
            for i in range(concurrency)
        ]
        self._threads.append(
            threading.Thread(target=self._release_due, name="webhook-later", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    def submit(self, action: Action, round_: int = 0, due: float | None = None) -> bool:
        """Queue one action (its ``round_``, and at wall-clock time ``due`` if later than now);
        False if the queue is full."""
        if due is not None and due > self._wall():
            self._defer(action, round_, due)
            return True
        try:
            self._queue.put_nowait((action, round_))
        except queue.Full:
            return False
        return True

    @property
    def pending(self) -> int:
        """Actions waiting for a worker."""
        return self._queue.qsize()

    @property
    def scheduled(self) -> int:
        """Actions waiting for their next round."""
        return len(self._later)

    def _defer(self, action: Action, round_: int, due: float) -> None:
        with self._later_lock:
            self._seq += 1
            heapq.heappush(self._later, (due, self._seq, action, round_))
            self._later_lock.notify()

    def _release_due(self) -> None:
        """Move the actions whose next round is due into the queue (it waits when full)."""
        while True:
            with self._later_lock:
                if self._closed:
                    return
                now = self._wall()
                if not self._later or self._later[0][0] > now:
                    wait = self._later[0][0] - now if self._later else self._retry_s
                    self._later_lock.wait(min(max(wait, 0.0), self._retry_s))
                    continue
                _, _, action, round_ = heapq.heappop(self._later)
            self._queue.put((action, round_))

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._retry_s)
            except queue.Empty:  # idle: write the marks that waited for the ledger
                self.sender.flush_unrecorded()
                continue
            if item is None:
                return
            with self._later_lock:
                self._busy += 1
            try:
                self._handle(*item)
            finally:
                with self._later_lock:
                    self._busy -= 1

    def _handle(self, action: Action, round_: int) -> None:
        """Deliver one action: report how it ended, or defer it to its next round."""
        if self.disabled is not None:
            self._report(action, "failed", 0, f"endpoint disabled: {self.disabled}")
            return
        if self._throttle_until > self._wall():  # the endpoint asked to slow down
            self._defer(action, round_, self._throttle_until)
            return
        result = self._deliver(action, again=round_ > 0)
        if result.outcome == "gone":
            self._disable(result.error)
            self._report(action, "failed", result.attempts, f"endpoint disabled: {self.disabled}")
        elif result.outcome == "failed" and result.retryable and round_ < len(self._schedule):
            if result.status in THROTTLE_STATUSES:
                self._throttle_until = max(
                    self._throttle_until, self._wall() + (result.retry_after or self._throttle_s)
                )
            delay = max(self._schedule[round_], result.retry_after or 0.0)
            due = self._wall() + delay
            if self._on_scheduled is not None:
                self._on_scheduled(action, round_ + 1, due, result.error)
            self._defer(action, round_ + 1, due)
        else:
            self._report(action, *result[:3])

    def _disable(self, error: str | None) -> None:
        reason = f"{self.sender.url} answered {error or '410 Gone'}"
        first = self.disabled is None
        self.disabled = reason
        if first:
            log.error("webhook endpoint disabled: %s", reason)
            self.sender.disable(reason)
            if self._on_disabled is not None:
                self._on_disabled(reason)

    def _deliver(self, action: Action, again: bool = False) -> Delivery:
        started = self._clock()
        while True:
            try:
                result = self.sender.deliver(action, again)
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
        """Finish what is queued and the rounds due within ``timeout_s``, then stop the workers;
        actions waiting for a later round stay with the caller (its snapshot)."""
        deadline = self._wall() + timeout_s
        while self._wall() < deadline:
            with self._later_lock:
                due_soon = bool(self._later) and self._later[0][0] <= deadline
                idle = not due_soon and self._busy == 0 and self._queue.empty()
            if idle:
                break
            time.sleep(0.02)
        with self._later_lock:
            self._closed = True
            self._later_lock.notify_all()
        for _ in self._threads[:-1]:
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.sender.close()
