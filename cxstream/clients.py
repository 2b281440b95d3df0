"""Kafka and Redis clients from the settings: the Redis clients of the context store and of the
coordination state, topic creation, and a produce that waits while the local queue is full."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from pydantic import SecretStr
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from cxstream.errors import ServiceError
from cxstream.settings import Settings

__all__ = ["context_client", "ensure_topics", "produce_waiting", "redis_client"]


def context_client(settings: Settings) -> redis.Redis | RedisCluster:
    """The client of the customer-context store: ``redis.context_url`` (else ``redis.url``), a
    Redis Cluster client when ``redis.context_cluster`` is set."""
    r = settings.redis
    if not r.context_cluster:
        return redis_client(settings, r.context_url)
    url, timeouts = _connection(settings, r.context_url)
    try:
        return RedisCluster.from_url(url, **timeouts)
    except (redis.RedisError, RedisClusterException) as exc:
        msg = f"cannot reach the Redis Cluster of redis.context_url: {exc}"
        raise ServiceError(msg) from exc


def redis_client(settings: Settings, url: SecretStr | None = None) -> redis.Redis:
    """A Redis client from the settings (TLS with ``rediss://``, password in the URL): ``url``
    if given, else ``redis.url``."""
    address, timeouts = _connection(settings, url)
    return redis.Redis.from_url(address, **timeouts)


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
