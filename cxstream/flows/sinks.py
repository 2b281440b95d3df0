"""Bytewax sinks that wrap the engine-agnostic action and context objects."""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer
from typing_extensions import override

from cxstream import metrics
from cxstream.actions.webhook import WebhookSender
from cxstream.context import ContextStore
from cxstream.events import Action, CustomerContext, utcnow

__all__ = ["CustomerSink", "WebhookSink"]

log = logging.getLogger(__name__)


class _WebhookPartition(StatelessSinkPartition[Action]):
    def __init__(
        self, sender: WebhookSender, dead_letters: Producer | None, dlq_topic: str
    ) -> None:
        self._sender = sender
        self._dlq = dead_letters
        self._dlq_topic = dlq_topic

    @override
    def write_batch(self, items: list[Action]) -> None:
        for action in items:
            outcome, attempts = self._sender.deliver(action)
            if attempts > 1:
                metrics.WEBHOOK_DELIVERIES.labels("retried").inc(attempts - 1)
            if outcome == "delivered":
                metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            elif outcome == "failed":
                metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
                self._dead_letter(action)
        if self._dlq is not None:
            self._dlq.poll(0)

    def _dead_letter(self, action: Action) -> None:
        if self._dlq is None:
            log.error("webhook delivery failed and no dead-letter producer is configured")
            return
        record = {
            "action": action.model_dump(mode="json"),
            "error": self._sender.last_error,
            "endpoint": self._sender.url,
            "failed_at": utcnow().isoformat(),
        }
        self._dlq.produce(
            self._dlq_topic, key=action.subscriber_id.encode(), value=orjson.dumps(record)
        )
        metrics.WEBHOOK_DELIVERIES.labels("dead_lettered").inc()

    @override
    def close(self) -> None:
        self._sender.close()
        if self._dlq is not None:
            self._dlq.flush(10)


class WebhookSink(DynamicSink[Action]):
    """POST each action, signed; after the last attempt it goes to the actions dead-letter topic.

    ``sender_factory`` builds one :class:`WebhookSender` per worker; ``producer_config`` (librdkafka
    settings) builds the dead-letter producer, or ``None`` to only log failures.
    """

    def __init__(
        self,
        sender_factory: Callable[[], WebhookSender],
        *,
        producer_config: dict[str, str] | None,
        dlq_topic: str,
    ) -> None:
        self._factory = sender_factory
        self._producer_config = producer_config
        self._dlq_topic = dlq_topic

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WebhookPartition:
        producer = Producer(self._producer_config) if self._producer_config is not None else None
        return _WebhookPartition(self._factory(), producer, self._dlq_topic)


class _CustomerPartition(StatelessSinkPartition[CustomerContext]):
    def __init__(self, store: ContextStore) -> None:
        self._store = store

    @override
    def write_batch(self, items: list[CustomerContext]) -> None:
        self._store.put_many(items)
        metrics.CUSTOMER_UPDATES.labels("applied").inc(len(items))


class CustomerSink(DynamicSink[CustomerContext]):
    """Write customer-context updates to Redis, one pipeline per batch."""

    def __init__(self, store: ContextStore) -> None:
        self._store = store

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CustomerPartition:
        return _CustomerPartition(self._store)
