"""Kafka and Redis clients from the settings: the Redis clients of the context store and of the
coordination state, topic creation, and a produce that waits while the local queue is full."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pydantic import SecretStr
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from cxstream.actions.store import ClaimStore
from cxstream.actions.webhook import CircuitBreaker, WebhookSender
from cxstream.errors import ConfigError, ServiceError
from cxstream.redis_guard import (
    GuardedCluster,
    guarded_cluster_options,
    guarded_connection_options,
)
from cxstream.settings import Settings

__all__ = [
    "context_client",
    "ensure_topics",
    "produce_waiting",
    "read_topic",
    "redis_client",
    "webhook_sender",
]


def context_client(settings: Settings) -> redis.Redis | RedisCluster:
    """The client of the customer-context store: ``redis.context_url`` (else ``redis.url``), a
    Redis Cluster client when ``redis.context_cluster`` is set."""
    r = settings.redis
    if not r.context_cluster:
        return redis_client(settings, r.context_url)
    url, timeouts = _connection(settings, r.context_url)
    try:
        return GuardedCluster.from_url(url, **timeouts, **guarded_cluster_options(url))
    except (redis.RedisError, RedisClusterException) as exc:
        msg = f"cannot reach the Redis Cluster of redis.context_url: {exc}"
        raise ServiceError(msg) from exc


def redis_client(settings: Settings, url: SecretStr | None = None) -> redis.Redis:
    """A Redis client from the settings (TLS with ``rediss://``, password in the URL): ``url``
    if given, else ``redis.url``."""
    address, timeouts = _connection(settings, url)
    return redis.Redis.from_url(address, **timeouts, **guarded_connection_options(address))


def _connection(settings: Settings, url: SecretStr | None) -> tuple[str, dict[str, float]]:
    r = settings.redis
    chosen = url if url is not None else r.url
    if chosen is None:
        msg = "redis.url is not set (set it, or use `cxstream demo` for an embedded Redis)"
        raise ServiceError(msg)
    timeout = r.socket_timeout_s
    return chosen.get_secret_value(), {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def ensure_topics(
    settings: Settings, topics: Iterable[str] | None = None, timeout_s: float = 30
) -> None:
    """Create the topics that do not exist yet (with ``kafka.topics.partitions`` partitions)."""
    admin = AdminClient(dict(settings.kafka.client_config()))
    wanted = list(topics if topics is not None else settings.kafka.topics.all())
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        msg = f"cannot reach Kafka at {settings.kafka.brokers}: {exc}"
        raise ServiceError(msg) from exc
    finally:
        admin.poll(0)  # librdkafka's log lines, through the rate-limited logger
    new = [
        NewTopic(t, num_partitions=settings.kafka.topics.partitions, replication_factor=1)
        for t in wanted
        if t not in existing
    ]
    if not new:
        return
    for topic, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                msg = f"cannot create topic {topic}: {exc}"
                raise ServiceError(msg) from exc


def produce_waiting(
    producer: Producer, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any
) -> None:
    """``producer.produce``, waiting for deliveries to drain while its local queue is full."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def read_topic(
    settings: Settings, topic: str, timeout_s: float = 60.0, *, quiet_s: float = 0.0
) -> list[bytes | None]:
    """The values now in ``topic``, from the start of each partition to its end (partitions
    are assigned: no consumer group is joined, no offset committed). With ``quiet_s``, the read
    goes on after every partition's end until nothing more came for that long."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": "cxstream-reader",
            "enable.auto.commit": "false",
            "enable.partition.eof": "true",
            "fetch.wait.max.ms": "50",  # at a partition's end a fetch answers within this
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            msg = f"cannot read topic {topic}: {meta.error if meta else 'not found'}"
            raise ServiceError(msg)
        partitions = list(meta.partitions)
        ends: set[int] = set()
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout_s)
            if high <= low:
                ends.add(p)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        values: list[bytes | None] = []
        start = last = time.monotonic()
        while len(ends) < len(partitions) or time.monotonic() - last < quiet_s:
            if time.monotonic() - start > timeout_s:
                msg = f"reading {topic} took more than {timeout_s:.0f} s"
                raise ServiceError(msg)
            message = consumer.poll(0.1 if quiet_s else 0.5)
            if message is None:
                continue
            last = time.monotonic()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.add(message.partition() or 0)
                    continue
                msg = f"cannot read topic {topic}: {error}"
                raise ServiceError(msg)
            values.append(message.value())
    except KafkaException as exc:
        msg = f"cannot read topic {topic}: {exc}"
        raise ServiceError(msg) from exc
    finally:
        consumer.close()
    return values


def webhook_sender(
    settings: Settings, ledger: ClaimStore | None, *, breaker: bool = True
) -> WebhookSender:
    """The action webhook's sender from ``webhook`` (url, secrets, timeouts, quick attempts),
    recording deliveries in ``ledger`` under ``redis.key_prefix``; with ``breaker`` a circuit
    breaker per endpoint (the flow's; a one-off command has none)."""
    w = settings.webhook
    if w.url is None or w.secret is None:
        msg = "webhook.url and webhook.secret must both be set (CXSTREAM_WEBHOOK__URL, __SECRET)"
        raise ConfigError(msg)
    previous = w.previous_secret.get_secret_value() if w.previous_secret is not None else None
    return WebhookSender(
        w.url,
        w.secret.get_secret_value(),
        timeout_s=w.timeout_s,
        max_attempts=w.max_attempts,
        backoff_s=w.backoff_s,
        breaker=CircuitBreaker(w.breaker_failures, w.breaker_reset_s) if breaker else None,
        ledger=ledger,
        ledger_prefix=settings.redis.key_prefix,
        ledger_ttl_s=settings.policy.idempotency_ttl_s,
        resend_unknown=w.resend_unknown,
        previous_secret=previous,
    )
