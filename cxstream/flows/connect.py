"""The flow's inputs and outputs in production: Kafka topics through the batch source and the
sinks, Redis behind the pipeline, the webhook, and the deferred-actions queue. Tests build
:class:`FlowIO` from Bytewax's testing sources and sinks instead."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.inputs import SimplePollingSource, Source
from bytewax.outputs import Sink
from typing_extensions import override

from cxstream.actions.ledger import DeferredQueue, ExperimentLedger, RedisLedger
from cxstream.actions.policy import Decision
from cxstream.actions.retries import RedisRetryStore, RetryStore, retry_key
from cxstream.actions.store import RedisClaimStore
from cxstream.actions.webhook import WebhookSender
from cxstream.churn_state import RedisChurnState
from cxstream.clients import context_client, redis_client, webhook_sender
from cxstream.context import ContextStore
from cxstream.detectors.table import SubscriberTable
from cxstream.erasure import Eraser, deferred_key
from cxstream.errors import ConfigError
from cxstream.events import Action, CustomerErasure, CustomerUpdate
from cxstream.flows.routing import shard_keys
from cxstream.flows.sinks import CustomerSink, KafkaOutSink, WebhookSink
from cxstream.flows.source import BatchKafkaSource
from cxstream.health import HEARTBEAT
from cxstream.pipeline import Pipeline
from cxstream.settings import Settings

__all__ = [
    "BaseScoreSource",
    "DeferredSource",
    "FlowIO",
    "KafkaOut",
    "kafka_io",
    "pipeline_from_settings",
]

log = logging.getLogger(__name__)

KafkaOut = KafkaSinkMessage[bytes | None, bytes | None]


@dataclass
class FlowIO:
    """Every input and output of the flow, injected (Kafka in production, test doubles in tests)."""

    qos_source: Source[Any]
    kafka_sink: Sink[KafkaOut] | Sink[tuple[str, KafkaOut]]
    customer_source: Source[Any] | None = None
    customer_sink: Sink[CustomerUpdate | CustomerErasure] | None = None
    webhook_sink: Sink[Action] | Sink[tuple[str, Action]] | None = None
    # where the webhook reads the actions from: the actions topic (production), so that nothing
    # is delivered that the topic does not record; None: straight from the decisions (tests)
    action_source: Source[Any] | None = None
    outcome_source: Source[Any] | None = None
    control_source: Source[Any] | None = None  # operators' commands (the alarm-updates topic)
    deferred_source: Source[list[Decision]] | None = None
    # the scheduled churn scoring of every profile: emits a summary when a pass ends
    base_score_source: Source[dict[str, Any]] | None = None


class _PollProcessor:
    """The hot path's first steps, run by each QoS source partition on its own polls."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def new_state(self) -> SubscriberTable:
        return self._pipeline.new_poll_state()

    def process(self, items: list[Any], state: Any) -> list[Any]:
        return list(self._pipeline.process_poll(items, state))


class DeferredSource(SimplePollingSource[list[Decision]]):
    """Polls the deferred queue every ``interval_s``: actions whose quiet hours are over re-enter
    the flow, each decided afresh (released or suppressed, with the reason).

    It wakes up every ``wake_s`` in between (doing nothing): Bytewax lets no input go on past an
    epoch boundary until every input has reached it, and an input only moves to the next epoch
    when it wakes up, so a source that slept for the whole poll interval would stall the hot path
    once per epoch for up to that long (measured: hundreds of milliseconds at 20,000 events/s).
    """

    def __init__(
        self,
        release: Callable[[], list[Decision]],
        interval_s: float,
        *,
        wake_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wake = timedelta(seconds=max(min(wake_s, interval_s), 0.001))
        super().__init__(self._wake)
        self._release = release
        self._every = interval_s
        self._clock = clock
        self._next = clock()

    @override
    def next_item(self) -> list[Decision]:
        HEARTBEAT.beat()  # the worker is awake (cxstream.health tells a blocked one by it)
        now = self._clock()
        if now < self._next:
            raise SimplePollingSource.Retry(self._wake)
        self._next = now + self._every
        released = self._release()
        if not released:
            raise SimplePollingSource.Retry(self._wake)
        return released


class BaseScoreSource(SimplePollingSource[dict[str, Any]]):
    """Runs the scheduled churn scoring (:class:`~cxstream.steps.churn_risk.BaseScoring`): one
    chunk of profiles per wake-up while a pass is under way, nothing in between. A single
    partition, so one worker of a cluster runs it."""

    def __init__(self, step: Callable[[], dict[str, Any] | None], *, wake_s: float = 0.02):
        self._wake = timedelta(seconds=max(wake_s, 0.001))
        super().__init__(self._wake)
        self._step = step

    @override
    def next_item(self) -> dict[str, Any]:
        summary = self._step()
        if summary is None:
            raise SimplePollingSource.Retry(self._wake)
        return summary


def pipeline_from_settings(settings: Settings) -> Pipeline:
    """The pipeline with its Redis-backed context store and claim store."""
    client = redis_client(settings)
    r = settings.redis
    ctx_client = context_client(settings)
    context = ContextStore(
        ctx_client,
        prefix=r.key_prefix,
        ttl_s=r.cache_ttl_s,
        max_entries=r.cache_max_entries,
        customer_ttl_s=r.customer_ttl_s,
    )
    prefix = settings.redis.key_prefix
    pipeline = Pipeline(
        settings,
        context=context,
        claims=RedisClaimStore(client),
        ledger=RedisLedger(client),
        deferred=DeferredQueue(client, key=deferred_key(prefix)),
        experiment=ExperimentLedger(client, prefix=prefix),
        churn=RedisChurnState(client, prefix=prefix, ttl_s=settings.churn.snapshot_ttl_s),
        shard_keys=shard_keys(settings.flow.shards),
        eraser=Eraser.for_settings(settings, state=client, context=ctx_client),
    )
    try:
        pipeline.check_churn_checkpoint()
    except redis.RedisError as exc:  # Redis down at start: the flow copes; checked again later
        log.warning("could not check the churn model checkpoint: %s", exc)
    return pipeline


def kafka_io(settings: Settings, pipeline: Pipeline) -> FlowIO:
    """Production inputs and outputs: Kafka topics, Redis, and the webhook if configured."""
    k = settings.kafka
    client = k.client_config()
    consumer = {**client, **k.consumer_config}
    producer = k.producer_settings()
    brokers = k.brokers or []
    webhook_sink = None
    w = settings.webhook
    if w.url is not None:
        if w.secret is None:
            msg = "webhook.secret is required when webhook.url is set (CXSTREAM_WEBHOOK__SECRET)"
            raise ConfigError(msg)
        claims = pipeline.claims  # the same Redis holds the delivery ledger

        def make_sender() -> WebhookSender:
            return webhook_sender(settings, claims)

        def make_retries(partition: str) -> RetryStore:
            prefix = settings.redis.key_prefix
            store = RedisRetryStore(redis_client(settings), retry_key(prefix, partition))
            store.adopt(prefix, partition, webhook_sink.list_parts() if webhook_sink else [])
            return store

        webhook_sink = WebhookSink(
            make_sender,
            producer_config=producer,
            dlq_topic=k.topics.actions_dead_letters,
            status_topic=k.topics.deliveries,
            concurrency=w.concurrency,
            queue_size=w.queue_size,
            partitions=w.partitions,
            ledger_wait_s=w.ledger_wait_s,
            schedule=w.retry_schedule_s,
            alerts_topic=k.topics.alerts,
            retries_factory=make_retries,
        )

    side = {**consumer, **k.side_consumer_config}

    def source(
        topic: str, *, from_end: bool = False, start_dir: Path | None = None
    ) -> BatchKafkaSource:
        # the low-volume inputs: partitions are assigned, not joined as a group; errors become
        # dead letters
        return BatchKafkaSource(
            brokers,
            [topic],
            add_config=side,
            admin_config=client,
            batch_size=k.consumer_batch_size,
            linger_s=settings.flow.poll_linger_s,
            from_end=from_end,
            start_dir=start_dir,
            from_start=settings.flow.inputs_from_start,
        )

    return FlowIO(
        # the hot input hands over whole polls (no object per message)
        qos_source=BatchKafkaSource(
            brokers,
            [k.topics.qos],
            add_config=consumer,
            admin_config=client,
            batch_size=k.consumer_batch_size,
            processor=_PollProcessor(pipeline) if settings.flow.state_by == "partition" else None,
            linger_s=settings.flow.poll_linger_s,
            from_start=settings.flow.inputs_from_start,
        ),
        kafka_sink=KafkaOutSink(
            producer,
            partitions=k.sink_partitions,
            recovery=settings.flow.recovery_dir is not None,
        ),
        customer_source=source(k.topics.customers),
        customer_sink=CustomerSink(
            pipeline.context,
            producer_config=producer,
            dlq_topic=k.topics.dead_letters,
            erase=pipeline.erase_customers,
        ),
        webhook_sink=webhook_sink,
        # a fresh start (no snapshot) delivers what is produced from then on, not the history
        # (recorded with the snapshots, so that a restart before the first snapshot does not skip
        # what the first start put on the topic)
        action_source=(
            source(k.topics.actions, from_end=True, start_dir=_actions_start_dir(settings))
            if webhook_sink is not None
            else None
        ),
        outcome_source=source(k.topics.outcomes),
        control_source=source(k.topics.alarm_updates),
        deferred_source=DeferredSource(
            pipeline.release_deferred,
            settings.policy.deferred_poll_s,
            wake_s=settings.flow.poll_linger_s,
        ),
        base_score_source=(
            BaseScoreSource(pipeline.score_base_step, wake_s=settings.flow.poll_linger_s)
            if pipeline.base_scoring.enabled
            else None
        ),
    )


def _actions_start_dir(settings: Settings) -> Path | None:
    """Where the actions input records where its first start began (with recovery on)."""
    if settings.flow.recovery_dir is None:
        return None
    return Path(settings.flow.recovery_dir) / "actions-start"
