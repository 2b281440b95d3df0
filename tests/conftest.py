"""Shared fixtures: throw-away redis-server and Tansu broker on free ports, topic factories."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from cxstream.clients import ensure_topics
from cxstream.devtools.services import EmbeddedBroker, EmbeddedRedis, free_port
from cxstream.settings import Settings, TopicSettings, load_settings
from tests.shared_data import SHARED_DATA


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared_data") is None or SHARED_DATA.is_dir():
        return
    reason = f"needs the real data sets in {SHARED_DATA} (the shared folder beside the checkout)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CXSTREAM_* variable from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("CXSTREAM_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A redis-server started from PATH for this test session (fails with a hint if missing)."""
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture
def redis_conn(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@contextlib.contextmanager
def redis_cluster_nodes() -> Iterator[tuple[str, list[EmbeddedRedis]]]:
    """A three-node Redis Cluster (no replicas) from redis-server and redis-cli on PATH: its URL
    and its nodes, stopped at the end."""
    nodes = [
        EmbeddedRedis(
            args=(
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-port", str(free_port())),  # not port + 10000: that may not exist
            )
        ).start()
        for _ in range(3)
    ]
    try:
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for node in nodes:  # every node agrees, not only the one a client asks first
            probe = redis.Redis(port=node.port)
            while probe.cluster("info").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    pytest.fail("the test Redis Cluster did not become ready")
                time.sleep(0.1)
            probe.close()
        yield nodes[0].url.removesuffix("/0"), nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """A three-node Redis Cluster for this test session; its URL."""
    with redis_cluster_nodes() as (url, _):
        yield url


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu, memory storage) for this test session."""
    server = EmbeddedBroker().start()
    yield server
    server.stop()


@pytest.fixture
def live_settings(broker: EmbeddedBroker, redis_server: EmbeddedRedis) -> Settings:
    """Settings pointing at the session's broker and Redis, with uuid-named topics."""
    suffix = uuid.uuid4().hex[:8]
    # every topic, output ones included: the session's broker is shared by all tests, and a test
    # that read the default cx.decisions once saw other tests' decisions in it
    names = [n for n in TopicSettings.model_fields if n != "partitions"]
    settings = load_settings(
        overrides={
            "kafka": {
                "brokers": [broker.bootstrap],
                "topics": {n: f"t-{n}-{suffix}" for n in names},
            },
            "redis": {"url": redis_server.url, "key_prefix": f"cx{suffix}"},
        }
    )
    ensure_topics(settings)
    return settings
