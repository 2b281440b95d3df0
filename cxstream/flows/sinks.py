"""Bytewax sinks that wrap the engine-agnostic action and context objects."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import redis
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from confluent_kafka import KafkaError, Message, Producer
from typing_extensions import override

from cxstream import metrics
from cxstream.actions.retries import RetryStore
from cxstream.actions.tmf import endpoint_alarm
from cxstream.actions.webhook import DEFAULT_SCHEDULE_S, DeliveryPool, WebhookSender
from cxstream.clients import produce_waiting
from cxstream.context import ContextStore, MergePending
from cxstream.erasure import ErasurePending
from cxstream.errors import ConfigError
from cxstream.events import Action, BadEvent, CustomerErasure, CustomerUpdate, utcnow
from cxstream.privacy import pseudonym

__all__ = ["MAX_WAITING_UPDATES", "CustomerSink", "KafkaOutSink", "WebhookSink"]

MAX_WAITING_UPDATES = 100_000

log = logging.getLogger(__name__)


PendingState = list[dict[str, Any]]
"""A webhook partition's snapshot: the actions accepted but not yet delivered or dead-lettered,
each ``{"action": ..., "round": n, "due": epoch seconds}`` (a plain action: round 0, now)."""


# the delivery pools of this process, read by the retries-waiting gauge at each scrape
_POOLS: weakref.WeakSet[DeliveryPool] = weakref.WeakSet()
metrics.WEBHOOK_RETRIES_WAITING.set_function(lambda: float(sum(p.scheduled for p in list(_POOLS))))


class _WebhookPartition(StatefulSinkPartition[Action, PendingState]):
    """Hands actions to a :class:`DeliveryPool`; the dataflow never waits for an endpoint.

    Accepted actions stay *pending* until delivered or dead-lettered, and the pending set, with
    each action's delivery round and when it is due, is this partition's recovery snapshot:
    after a crash, the resumed dataflow re-queues whatever was pending at the last epoch, each at
    its round and time (the delivery ledger skips any that did get through). The actions waiting
    for a later round are also kept in ``retries`` (Redis), so a retry schedule of hours
    survives a restart without recovery too.
    """

    def __init__(
        self,
        sender: WebhookSender,
        dead_letters: Producer | None,
        dlq_topic: str,
        concurrency: int,
        queue_size: int,
        status_topic: str | None,
        resume: PendingState | None,
        ledger_wait_s: float = 600.0,
        schedule: Sequence[float] = DEFAULT_SCHEDULE_S,
        alerts_topic: str | None = None,
        retries: RetryStore | None = None,
    ) -> None:
        self._dlq = dead_letters
        self._retries = retries
        self._dlq_topic = dlq_topic
        self._status_topic = status_topic
        self._alerts_topic = alerts_topic
        self._url = sender.url
        self._lock = threading.Lock()
        self._pending: dict[str, Action] = {}
        self._rounds: dict[str, tuple[int, float]] = {}  # action id -> (round, due)
        self._pool = DeliveryPool(
            sender,
            self._report,
            concurrency=concurrency,
            queue_size=queue_size,
            wait_s=ledger_wait_s,
            schedule=schedule,
            on_scheduled=self._scheduled,
            on_disabled=self._disabled,
        )
        _POOLS.add(self._pool)
        metrics.WEBHOOK_ENDPOINT_DISABLED.set(1.0 if self._pool.disabled else 0.0)
        if resume:
            log.info("re-queueing %d webhook deliveries pending at the last snapshot", len(resume))
            for item in resume:
                if "action" in item:
                    self._accept(Action.model_validate(item["action"]), item["round"], item["due"])
                else:
                    self._accept(Action.model_validate(item), 0, None)
        if retries is not None:
            waiting = retries.load()
            if waiting:
                log.info(
                    "re-queueing %d webhook deliveries waiting for a later round", len(waiting)
                )
            for action, round_, due in waiting:
                self._accept(action, round_, due)

    @override
    def write_batch(self, values: list[Action]) -> None:
        for action in values:
            self._accept(action, 0, None)
        if self._dlq is not None:
            self._dlq.poll(0)

    def _accept(self, action: Action, round_: int, due: float | None) -> None:
        with self._lock:
            if action.action_id in self._pending:
                return  # queued already (read again after a resume): one delivery
            self._pending[action.action_id] = action
            if round_:
                self._rounds[action.action_id] = (round_, due or 0.0)
        if not self._pool.submit(action, round_, due):
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            self._finish(action)
            self._dead_letter(action, "overloaded: delivery queue full")

    @override
    def snapshot(self) -> PendingState:
        with self._lock:
            return [
                {
                    "action": a.model_dump(mode="json"),
                    "round": self._rounds.get(i, (0, 0.0))[0],
                    "due": self._rounds.get(i, (0, 0.0))[1],
                }
                for i, a in self._pending.items()
            ]

    def _finish(self, action: Action) -> None:
        with self._lock:
            self._pending.pop(action.action_id, None)
            waited = self._rounds.pop(action.action_id, None) is not None
        if waited and self._retries is not None:
            self._retries.remove(action.action_id)

    def _scheduled(self, action: Action, round_: int, due: float, error: str | None) -> None:
        with self._lock:
            self._rounds[action.action_id] = (round_, due)
        if self._retries is not None:
            self._retries.put(action, round_, due)
        metrics.WEBHOOK_DELIVERIES.labels("scheduled").inc()
        self._status(action, "scheduled", round_, error, next_attempt_at=due)

    def _disabled(self, reason: str) -> None:
        metrics.WEBHOOK_ENDPOINT_DISABLED.set(1.0)
        if self._dlq is not None and self._alerts_topic is not None:
            alarm = endpoint_alarm(self._url, reason, utcnow())
            self._dlq.produce(self._alerts_topic, key=b"webhook", value=orjson.dumps(alarm))

    def _status(
        self,
        action: Action,
        status: str,
        attempts: int,
        error: str | None,
        next_attempt_at: float | None = None,
    ) -> None:
        if self._dlq is None or self._status_topic is None:
            return
        record = {
            "action_id": action.action_id,
            "subscriber_id": action.subscriber_id,
            "kind": action.kind,
            "status": status,
            "attempts": attempts,
            "error": error,
            "at": utcnow().isoformat(),
        }
        if next_attempt_at is not None:
            record["next_attempt_at"] = datetime.fromtimestamp(next_attempt_at, UTC).isoformat()
        self._dlq.produce(
            self._status_topic, key=action.subscriber_id.encode(), value=orjson.dumps(record)
        )

    def _report(self, action: Action, outcome: str, attempts: int, error: str | None) -> None:
        status = {"failed": "dead_lettered", "unknown": "outcome_unknown"}.get(outcome, "delivered")
        self._status(action, status, attempts, error)
        if attempts > 1:
            metrics.WEBHOOK_DELIVERIES.labels("retried").inc(attempts - 1)
        if outcome == "delivered":
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
        elif outcome in ("failed", "unknown"):
            metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
            self._dead_letter(action, error)
        self._finish(action)

    def _dead_letter(self, action: Action, error: str | None) -> None:
        if self._dlq is None:
            log.error(
                "webhook delivery for %s failed and no dead-letter producer is configured",
                pseudonym(action.subscriber_id),
            )
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


class WebhookSink(FixedPartitionedSink[Action, PendingState]):
    """POST each action, signed, from a pool of ``concurrency`` threads per partition; a round
    that failed for a reason that may pass is followed by another after each delay of
    ``schedule``, and after the last round (or with the queue full) the action goes to the
    actions dead-letter topic with the error; a delivery whose ledger (Redis) is unavailable
    waits for it up to ``ledger_wait_s``. A ``410 Gone`` disables the endpoint and raises an
    alarm on ``alerts_topic``. Items are ``(subscriber_id, action)``; ``partitions`` fixed
    partitions spread the deliveries over the workers and carry the pending actions (with their
    rounds) through recovery.

    ``sender_factory`` builds one :class:`WebhookSender` per partition; ``producer_config``
    (librdkafka settings) builds the dead-letter producer, or ``None`` to only log failures;
    ``retries_factory(partition)`` gives where each partition keeps its waiting rounds (Redis),
    or ``None``: the recovery snapshot only.
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
        partitions: int = 2,
        ledger_wait_s: float = 600.0,
        schedule: Sequence[float] = DEFAULT_SCHEDULE_S,
        alerts_topic: str | None = None,
        retries_factory: Callable[[str], RetryStore] | None = None,
    ) -> None:
        self._factory = sender_factory
        self._retries_factory = retries_factory
        self._ledger_wait_s = ledger_wait_s
        self._status_topic = status_topic
        self._producer_config = producer_config
        self._dlq_topic = dlq_topic
        self._concurrency = concurrency
        self._queue_size = queue_size
        self._partitions = partitions
        self._schedule = tuple(schedule)
        self._alerts_topic = alerts_topic

    @override
    def list_parts(self) -> list[str]:
        return [f"webhook-{i}" for i in range(self._partitions)]

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: PendingState | None
    ) -> _WebhookPartition:
        producer = Producer(self._producer_config) if self._producer_config is not None else None
        return _WebhookPartition(
            self._factory(),
            producer,
            self._dlq_topic,
            self._concurrency,
            self._queue_size,
            self._status_topic,
            resume_state,
            self._ledger_wait_s,
            self._schedule,
            self._alerts_topic,
            self._retries_factory(for_part) if self._retries_factory is not None else None,
        )


# The output producers of this process, read by the queued-outputs gauge at each scrape (a
# count kept on the hot path would cost a call per record).
_OUT_PRODUCERS: set[Producer] = set()
metrics.KAFKA_OUT_QUEUED.set_function(lambda: float(sum(map(len, list(_OUT_PRODUCERS)))))


class _KafkaOutPartition(StatefulSinkPartition[KafkaSinkMessage[bytes | None, bytes | None], None]):
    def __init__(self, producer: Producer, *, flush_on_snapshot: bool = True) -> None:
        self._producer = producer
        self._flush_on_snapshot = flush_on_snapshot
        _OUT_PRODUCERS.add(producer)

    @override
    def write_batch(self, values: list[KafkaSinkMessage[bytes | None, bytes | None]]) -> None:
        for msg in values:
            if msg.topic is None:
                err = f"no topic to produce to for {msg}"
                raise ConfigError(err)
            produce_waiting(self._producer, msg.topic, msg.value, msg.key, on_delivery=_delivered)
        metrics.KAFKA_OUT_RECORDS.inc(len(values))
        self._producer.poll(0)  # serve delivery reports; never wait

    @override
    def snapshot(self) -> None:
        # Called as every epoch closes. With recovery on, everything of the epoch is
        # acknowledged before its snapshot is written, so a resume never skips an output that was
        # lost. Bytewax 0.21 calls it with recovery off too, where there is no snapshot to wait
        # for: the worker would only sit idle for a broker round trip (1-4 % of a worker's
        # samples in two-process bench runs).
        if self._flush_on_snapshot:
            self._producer.flush()
        else:
            self._producer.poll(0)

    @override
    def close(self) -> None:
        self._producer.flush(30)
        _OUT_PRODUCERS.discard(self._producer)


def _delivered(err: KafkaError | None, msg: Message) -> None:
    if err is not None:
        metrics.KAFKA_DELIVERY_ERRORS.labels(msg.topic() or "").inc()
        log.error("Kafka delivery to %s failed: %s", msg.topic(), err)


class KafkaOutSink(FixedPartitionedSink[KafkaSinkMessage[bytes | None, bytes | None], None]):
    """Produce the flow's outputs (alerts, decisions, actions, dead letters, cell summaries) to
    their topics without waiting for the broker.

    Bytewax's ``KafkaSink`` flushes after every batch: each batch of outputs costs the worker a
    round trip to the broker, during which no event is processed. Here a batch is only handed to
    the producer, and the wait happens once per epoch, in :meth:`_KafkaOutPartition.snapshot`,
    which keeps outputs at-least-once across a crash; ``recovery=False`` (no snapshots, so no
    resume to protect) skips that wait. Items are ``(key, message)``; ``partitions`` spread the
    output over the workers.
    """

    def __init__(
        self, producer_config: dict[str, str], *, partitions: int = 2, recovery: bool = True
    ) -> None:
        self._config = producer_config
        self._partitions = partitions
        self._recovery = recovery

    @override
    def list_parts(self) -> list[str]:
        return [f"kafka-out-{i}" for i in range(self._partitions)]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KafkaOutPartition:
        return _KafkaOutPartition(Producer(self._config), flush_on_snapshot=self._recovery)


class _CustomerPartition(StatelessSinkPartition[CustomerUpdate | CustomerErasure]):
    def __init__(
        self,
        store: ContextStore,
        dead_letters: Producer | None,
        dlq_topic: str,
        erase: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._store = store
        self._dlq = dead_letters
        self._dlq_topic = dlq_topic
        self._erase = erase
        self._waiting: list[CustomerUpdate] = []  # not applied for want of Redis: retried
        self._erasing: list[str] = []  # erasures not done for want of Redis: retried

    @override
    def write_batch(self, items: list[CustomerUpdate | CustomerErasure]) -> None:
        # in order: an update after a tombstone creates the customer again
        run: list[CustomerUpdate] = []
        for item in items:
            if isinstance(item, CustomerErasure):
                if run:
                    self._merge(run)
                    run = []
                self._erase_ids([item.subscriber_id])
            else:
                run.append(item)
        if run or self._waiting or self._erasing:
            self._merge(run)

    def _erase_ids(self, subscriber_ids: list[str]) -> None:
        todo = [*self._erasing, *subscriber_ids]
        self._waiting = [u for u in self._waiting if u.customer.subscriber_id not in todo]
        if self._erase is None:
            self._store.forget(todo)
            self._erasing = []
            return
        try:
            self._erase(todo)
        except redis.RedisError as exc:
            # with a Redis Cluster answering in part, only those it could not reach wait
            pending = exc.pending if isinstance(exc, ErasurePending) else todo
            log.warning("Redis unavailable, %d erasures wait for it: %s", len(pending), exc)
            metrics.CUSTOMER_UPDATES.labels("erased").inc(len(todo) - len(pending))
            self._erasing = pending[-MAX_WAITING_UPDATES:]
            return
        metrics.CUSTOMER_UPDATES.labels("erased").inc(len(todo))
        self._erasing = []

    def _merge(self, items: list[CustomerUpdate]) -> None:
        if self._erasing:
            self._erase_ids([])
        batch = [*self._waiting, *items]
        if not batch:
            return
        try:
            self._store.merge_many(batch)
        except redis.RedisError as exc:
            # Not lost: kept to be applied when Redis is back (updates are versioned, so a late
            # one never overrides a newer one), and dead-lettered with its own bytes meanwhile.
            # With a Redis Cluster answering in part, only those of the silent nodes wait.
            pending = exc.pending if isinstance(exc, MergePending) else batch
            waiting = {id(u) for u in pending}
            new = [u for u in items if id(u) in waiting]
            log.warning(
                "Redis unavailable, %d customer updates wait for it (dead-lettered meanwhile): %s",
                len(new),
                exc,
            )
            if len(pending) < len(batch):
                metrics.CUSTOMER_UPDATES.labels("applied").inc(len(batch) - len(pending))
            metrics.CUSTOMER_UPDATES.labels("dead_letter").inc(len(new))
            if self._dlq is not None:
                for update in new:
                    bad = BadEvent.of(
                        "redis_unavailable",
                        str(exc),
                        update.raw,
                        topic=update.topic,
                        partition=update.partition,
                        offset=update.offset,
                        kind="customer",
                    )
                    produce_waiting(
                        self._dlq, self._dlq_topic, bad.model_dump_json().encode(), None
                    )
                    metrics.DEAD_LETTERS.labels("customer", "redis_unavailable").inc()
                self._dlq.flush(10)
            self._waiting = pending[-MAX_WAITING_UPDATES:]
            return
        if self._waiting:
            log.info("%d customer updates applied now that Redis is back", len(self._waiting))
        metrics.CUSTOMER_UPDATES.labels("applied").inc(len(batch))
        self._waiting = []


class CustomerSink(DynamicSink[CustomerUpdate | CustomerErasure]):
    """Merge customer updates into Redis, one pipeline per batch; with Redis down each goes to
    the dead-letter topic with its own bytes (``producer_config`` given) and is kept (up to
    ``MAX_WAITING_UPDATES``) to be applied with the next batch once Redis answers. A tombstone
    (:class:`~cxstream.events.CustomerErasure`) calls ``erase`` with the customer's id
    (:meth:`cxstream.pipeline.Pipeline.erase_customers`), retried likewise while Redis is down."""

    def __init__(
        self,
        store: ContextStore,
        *,
        producer_config: dict[str, str] | None = None,
        dlq_topic: str = "cx.dead-letters",
        erase: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._store = store
        self._producer_config = producer_config
        self._dlq_topic = dlq_topic
        self._erase = erase

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CustomerPartition:
        producer = Producer(self._producer_config) if self._producer_config is not None else None
        return _CustomerPartition(self._store, producer, self._dlq_topic, self._erase)
