"""Deliver actions to a marketing/CRM system as signed CloudEvents over HTTP.

Each action is a CloudEvents 1.0 structured-mode JSON envelope (``application/cloudevents+json``)
whose ``id`` is the action's idempotency key, signed per Standard Webhooks (``webhook-id`` is the same
key, so a receiver deduplicates on it). Timeouts, connection errors and 5xx are retried with
exponential backoff and jitter; ``429`` honours ``Retry-After``; other 4xx are final. A key marked in
the delivery ledger is never sent again, so a replay after a restart does not contact anyone twice.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Literal

import httpx
import orjson

from cxstream.actions.signing import sign_headers
from cxstream.actions.store import ClaimStore
from cxstream.events import Action

__all__ = ["DeliveryOutcome", "WebhookSender", "cloudevent"]

log = logging.getLogger(__name__)

DeliveryOutcome = Literal["delivered", "already_delivered", "failed"]


def cloudevent(action: Action, *, source: str = "urn:cxstream") -> bytes:
    """The CloudEvents 1.0 structured JSON envelope of one action.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> a = Action(action_id="a1", kind="proactive_apology", subscriber_id="s1", channel="sms",
    ...            reason="degradation", alert_id="x", event_time=t, created_at=t)
    >>> orjson.loads(cloudevent(a))["type"]
    'com.cxstream.action.proactive_apology'
    """
    envelope = {
        "specversion": "1.0",
        "id": action.action_id,
        "source": source,
        "type": f"com.cxstream.action.{action.kind}",
        "subject": action.subscriber_id,
        "time": action.created_at.isoformat(),
        "datacontenttype": "application/json",
        "data": action.model_dump(mode="json"),
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
    client
        An ``httpx.Client`` to use (the test seam); one is created otherwise.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float = 2.0,
        max_attempts: int = 3,
        backoff_s: float = 0.2,
        ledger: ClaimStore | None = None,
        ledger_prefix: str = "cx",
        ledger_ttl_s: int = 7 * 86_400,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self._secret = secret
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._ledger = ledger
        self._ledger_prefix = ledger_prefix
        self._ledger_ttl_s = ledger_ttl_s
        self._client = client or httpx.Client(timeout=timeout_s)
        self._sleep = sleep
        self.last_error: str | None = None

    def _delivered_key(self, action: Action) -> str:
        return f"{self._ledger_prefix}:delivered:{action.action_id}"

    def deliver(self, action: Action) -> tuple[DeliveryOutcome, int]:
        """POST one action; returns the outcome and the number of attempts made."""
        if self._ledger is not None and self._ledger.exists_many([self._delivered_key(action)])[0]:
            return "already_delivered", 0
        body = cloudevent(action)
        for attempt in range(1, self.max_attempts + 1):
            headers = sign_headers(self._secret, action.action_id, body)
            headers["content-type"] = "application/cloudevents+json"
            retry_after: float | None = None
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    if self._ledger is not None:
                        self._ledger.claim_many(
                            [(self._delivered_key(action), "1")], self._ledger_ttl_s
                        )
                    return "delivered", attempt
                self.last_error = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    retry_after = _retry_after(response.headers.get("retry-after"))
                elif response.status_code < 500:
                    return "failed", attempt
            if attempt < self.max_attempts:
                delay = self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
                self._sleep(retry_after if retry_after is not None else delay)
        return "failed", self.max_attempts

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 60.0)
    except ValueError:
        return None
