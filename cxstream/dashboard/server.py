"""Start the dashboard beside the dataflow: Kafka feed thread + uvicorn in a thread."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

import uvicorn
from confluent_kafka import KafkaError, Producer

from cxstream.actions.rules import DEFAULT_POLICY, PolicySource
from cxstream.churn_state import RedisChurnState
from cxstream.clients import redis_client
from cxstream.context import ContextStore
from cxstream.dashboard.app import Publish, create_app
from cxstream.dashboard.auth import Sessions, Users
from cxstream.dashboard.feed import KafkaFeed
from cxstream.dashboard.peers import Peers
from cxstream.dashboard.risk import RiskView
from cxstream.dashboard.state import DashboardState
from cxstream.errors import ServiceError
from cxstream.settings import Settings

__all__ = ["Dashboard", "erasure_keys", "kafka_publisher", "start_dashboard"]

log = logging.getLogger(__name__)


@dataclass
class Dashboard:
    """A running dashboard."""

    url: str
    state: DashboardState
    server: uvicorn.Server
    feed: KafkaFeed
    peers: Peers | None = None

    def stop(self) -> None:
        """Stop serving, consuming and reading the other processes' figures."""
        self.server.should_exit = True
        self.feed.stop()
        if self.peers is not None:
            self.peers.stop()


def kafka_publisher(producer: Producer, timeout_s: float = 10.0) -> Publish:
    """Send an operator's command and wait until Kafka has it; if it has not within
    ``timeout_s``, drop it from the producer's queue (it must not reach the flow after the
    operator was told it failed) and raise :class:`ServiceError`."""
    lock = threading.Lock()  # one command at a time: a purge drops only the failed one

    def publish(topic: str, key: bytes, value: bytes) -> None:
        outcome: list[KafkaError | None] = []
        answer: KafkaError | str | None
        with lock:
            producer.produce(
                topic, key=key, value=value, on_delivery=lambda err, _msg: outcome.append(err)
            )
            producer.flush(timeout_s)
            answer = outcome[0] if outcome else "no answer"
            if not outcome:
                producer.purge(in_queue=True, in_flight=False)
                producer.poll(0)
        if answer is not None:
            msg = f"Kafka did not confirm it within {timeout_s:.0f} s ({answer})"
            raise ServiceError(msg)

    return publish


def erasure_keys(settings: Settings) -> list[bytes]:
    """The keys of the digests the dashboard keeps of erased customers' ids: derived from the
    webhook signing secret (kept out of Redis and Kafka), the one being retired matched too.
    Without a secret the digests are unkeyed: no id is saved in the clear either way."""
    w = settings.webhook
    return [
        hashlib.sha256(b"dashboard erasures:" + secret.get_secret_value().encode()).digest()
        for secret in (w.secret, w.previous_secret)
        if secret is not None
    ]


def start_dashboard(
    settings: Settings, context: ContextStore | None, peers: Peers | None = None
) -> Dashboard:
    """Serve the dashboard on ``dashboard.host:port``; returns where (with the token, if any).
    In a cluster, ``peers`` reads the other processes' health figures (started here)."""
    d = settings.dashboard
    token: str | None = None
    users = Users.load(d.users_file) if d.auth and d.users_file is not None else None
    people = users is not None or (d.auth and d.proxy_user_header is not None)
    if d.auth and (d.token is not None or not people):
        # the shared token: configured, or generated when nobody else can sign in
        token = d.token.get_secret_value() if d.token is not None else secrets.token_urlsafe(18)
    secret = d.session_secret.get_secret_value().encode() if d.session_secret else None
    publish = kafka_publisher(Producer(settings.kafka.producer_settings()))

    state = DashboardState(erasure_keys=erasure_keys(settings))
    pseudonyms = settings.privacy.pseudonyms()
    policy = PolicySource(settings.policy.file, default=DEFAULT_POLICY)
    churn = RedisChurnState(
        redis_client(settings),
        prefix=settings.redis.key_prefix,
        ttl_s=settings.churn.snapshot_ttl_s,
    )
    risk = RiskView(context, churn, lambda: policy.policy.value_model)
    feed = KafkaFeed(
        settings,
        state,
        pseudonyms=pseudonyms,
        store=redis_client(settings) if d.save_s > 0 else None,
        key=f"{settings.redis.key_prefix}:dashboard:state",
        save_s=d.save_s,
    ).start()
    app = create_app(
        state,
        context=context,
        publish=publish,
        updates_topic=settings.kafka.topics.alarm_updates,
        token=token,
        update_s=d.update_s,
        pseudonyms=pseudonyms,
        risk=risk,
        users=users,
        sessions=Sessions(secret, hours=d.session_hours),
        proxy_user_header=d.proxy_user_header if d.auth else None,
        proxy_role_header=d.proxy_role_header if d.auth else None,
        peers=peers.start() if peers is not None else None,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=d.host, port=d.port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    host = "127.0.0.1" if d.host in ("0.0.0.0", "::") else d.host  # noqa: S104 - display only
    # a configured token is the operator's secret: never shown; a generated one must be, once
    shown = token if token and d.token is None else None
    url = f"http://{host}:{d.port}/" + (f"?token={shown}" if shown else "")
    return Dashboard(url, state, server, feed, peers)
