"""Bytewax sinks that wrap the engine-agnostic action and context objects."""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer
from typing_extensions import override

from cxstream import metrics
from cxstream.actions.webhook import DeliveryPool, WebhookSender
from cxstream.context import ContextStore
from cxstream.events import Action, BadEvent, CustomerContext, utcnow

__all__ = ["CustomerSink", "WebhookSink"]

log = logging.getLogger(__name__)


class _WebhookPartition(StatelessSinkPartition[Action]):
    """Hands actions to a :class:`DeliveryPool`; the dataflow never waits for an endpoint."""

    def __init__(
        self,
        sender: WebhookSender,
        dead_letters: Producer | None,
        dlq_topic: str,
        concurrency: int,
        queue_size: int,
        status_topic: str | None = None,
    ) -> None:
        self._dlq = dead_letters
        self._dlq_topic = dlq_topic
        self._status_topic = status_topic
        self._url = sender.url
        self._pool = DeliveryPool(
            sender, self._report, concurrency=concurrency, queue_size=queue_size
        )

    @override
    def write_batch(self, items: list[Action]) -> None:
        for action in items:
            if not self._pool.submit(action):
                metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
                self._dead_letter(action, "overloaded: delivery queue full")
        if self._dlq is not None:
            self._dlq.poll(0)

    def _report(self, action: Action, outcome: str, attempts: int, error: str | None) -> None:
        if self._dlq is not None and self._status_topic is not None:
            status = "delivered" if outcome != "failed" else "dead_lettered"
            record = {
                "action_id": action.action_id,
                "subscriber_id": action.subscriber_id,
                "kind": action.kind,
                "status": status,
                "attempts": attempts,
                "error": error,
                "at": utcnow().isoformat(),
            }
            self._dlq.produce(
                self._status_topic, key=action.subscriber_id.encode(), value=orjson.dumps(record)
            )
        if attempts > 1:
            metrics.WEBHOOK_DELIVERIES.labels("retried").inc(attempts - 1)
        if outcome == "delivered":
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
        elif outcome == "failed":
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            self._dead_letter(action, error)

    def _dead_letter(self, action: Action, error: str | None) -> None:
        if self._dlq is None:
            log.error("webhook delivery failed and no dead-letter producer is configured")
            return
        record = {
            "action": action.model_dump(mode="json"),
            "error": error,
            "endpoint": self._url,
            "failed_at": utcnow().isoformat(),
        }
        self._dlq.produce(
            self._dlq_topic, key=action.subscriber_id.encode(), value=orjson.dumps(record)
        )
        metrics.WEBHOOK_DELIVERIES.labels("dead_lettered").inc()

    @override
    def close(self) -> None:
        self._pool.close()
        if self._dlq is not None:
            self._dlq.flush(10)


class WebhookSink(DynamicSink[Action]):
    """POST each action, signed, from a pool of ``concurrency`` threads per worker; after the
    last attempt (or with the queue full or the circuit open) it goes to the actions dead-letter
    topic with the error.

    ``sender_factory`` builds one :class:`WebhookSender` per worker; ``producer_config`` (librdkafka
    settings) builds the dead-letter producer, or ``None`` to only log failures.
    """

    def __init__(
        self,
        sender_factory: Callable[[], WebhookSender],
        *,
        producer_config: dict[str, str] | None,
        dlq_topic: str,
        concurrency: int = 4,
        queue_size: int = 10_000,
        status_topic: str | None = None,
    ) -> None:
        self._factory = sender_factory
        self._status_topic = status_topic
        self._producer_config = producer_config
        self._dlq_topic = dlq_topic
        self._concurrency = concurrency
        self._queue_size = queue_size

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WebhookPartition:
        producer = Producer(self._producer_config) if self._producer_config is not None else None
        return _WebhookPartition(
            self._factory(), producer, self._dlq_topic, self._concurrency, self._queue_size
        )


class _CustomerPartition(StatelessSinkPartition[CustomerContext]):
    def __init__(self, store: ContextStore, dead_letters: Producer | None, dlq_topic: str) -> None:
        self._store = store
        self._dlq = dead_letters
        self._dlq_topic = dlq_topic

    @override
    def write_batch(self, items: list[CustomerContext]) -> None:
        try:
            self._store.put_many(items)
        except redis.RedisError as exc:
            # Not lost: each update goes to the dead-letter topic, from where it can be replayed.
            log.warning("Redis unavailable, %d customer updates dead-lettered: %s", len(items), exc)
            metrics.CUSTOMER_UPDATES.labels("dead_letter").inc(len(items))
            if self._dlq is not None:
                for customer in items:
                    raw = customer.model_dump_json().encode()
                    bad = BadEvent.of("redis_unavailable", str(exc), raw, kind="customer")
                    self._dlq.produce(self._dlq_topic, value=bad.model_dump_json().encode())
                    metrics.DEAD_LETTERS.labels("customer", "redis_unavailable").inc()
                self._dlq.flush(10)
            return
        metrics.CUSTOMER_UPDATES.labels("applied").inc(len(items))


class CustomerSink(DynamicSink[CustomerContext]):
    """Write customer-context updates to Redis, one pipeline per batch; with Redis down they go
    to the dead-letter topic (``producer_config`` given) instead of being lost."""

    def __init__(
        self,
        store: ContextStore,
        *,
        producer_config: dict[str, str] | None = None,
        dlq_topic: str = "cx.dead-letters",
    ) -> None:
        self._store = store
        self._producer_config = producer_config
        self._dlq_topic = dlq_topic

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CustomerPartition:
        producer = Producer(self._producer_config) if self._producer_config is not None else None
        return _CustomerPartition(self._store, producer, self._dlq_topic)
